//! What the server does to an object before storing it: server-owned metadata, per-kind
//! status handling, defaulting hooks, pod QoS and default tolerations, Service IP and
//! NodePort allocation; NodeRestriction (mini-nodeauthz) for writes by nodes.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use mini_api::{meta, ApiError, Cause, ResourceInfo};
use serde_json::{json, Map, Value};

use crate::ApiServer;

/// How a write reaches the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Main,
    Status,
    /// `namespaces/x/finalize`: only `spec.finalizers` changes.
    Finalize,
    /// `certificatesigningrequests/x/approval`: only `status.conditions` changes.
    Approval,
}

/// NodeRestriction: a write by a node's credentials must concern its own Node, Lease, pods
/// (see mini-nodeauthz); everybody else passes. `old` is the stored object (for evictions
/// and token requests, the pod concerned), `new` what is written (or the request body).
pub(crate) async fn node_restriction(
    ctx: &crate::handlers::Ctx<'_>,
    operation: mini_nodeauthz::Operation,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = mini_nodeauthz::node_identity(ctx.user) else {
        return Ok(());
    };
    let name = ctx
        .info
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| new.map(meta::name))
        .unwrap_or_default();
    // a mirror pod naming its node as owner must carry that node's uid
    let own_node = match new {
        Some(pod)
            if ctx.res.kind == "Pod"
                && operation == mini_nodeauthz::Operation::Create
                && pod["metadata"].get("ownerReferences").is_some() =>
        {
            ctx.server
                .inner
                .store
                .get(&format!("/registry/core/nodes/{node}"))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        }
        _ => None,
    };
    let write = mini_nodeauthz::Write {
        node,
        operation,
        group: &ctx.res.group,
        resource: &ctx.res.plural,
        subresource: ctx.info.subresource.as_deref().unwrap_or_default(),
        namespace: ctx.info.namespace.as_deref().unwrap_or_default(),
        name,
        old,
        new,
        own_node: own_node.as_ref(),
    };
    mini_nodeauthz::admit(&write).map_err(|reason| {
        let mut e = ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: {reason}",
            ctx.res.qualified_plural()
        ));
        e.group = ctx.res.group.clone();
        e.kind = ctx.res.plural.clone();
        e.name = name.to_string();
        e
    })
}

/// Kinds whose status is reset on create (users can't set it), as upstream strategies do.
fn resets_status_on_create(res: &ResourceInfo) -> bool {
    if res.custom.is_some() {
        return res.has_status();
    }
    matches!(
        (res.group.as_str(), res.kind.as_str()),
        ("apps", _)
            | ("batch", _)
            | ("autoscaling", _)
            | ("policy", "PodDisruptionBudget")
            | ("networking.k8s.io", "Ingress")
            | ("", "ReplicationController")
            | ("certificates.k8s.io", _)
            | ("apiextensions.k8s.io", _)
    )
}

/// Whether the kind carries `metadata.generation` (objects with a spec, and custom resources).
fn tracks_generation(res: &ResourceInfo, obj: &Value) -> bool {
    res.custom.is_some() || obj.get("spec").is_some()
}

/// Server-owned metadata and per-kind status on create. Defaults run here too.
pub fn prepare_create(res: &ResourceInfo, obj: &mut Value) {
    if res.custom.is_none() {
        mini_validation::apply_defaults(&res.group, &res.version, &res.kind, obj);
    } else if let Some(schema) = res.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        mini_validation::apply_schema_defaults(schema, obj);
    }
    let has_generation = tracks_generation(res, obj);
    {
        let m = meta::metadata_mut(obj);
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
        if has_generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if resets_status_on_create(res) {
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
        }
    }
    match (res.group.as_str(), res.kind.as_str()) {
        ("", "Pod") => {
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
            add_default_tolerations(obj);
            add_service_account_token_volume(obj);
        }
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
        }
        ("batch", "Job") => generate_job_selector(obj),
        ("", "Service") => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "PersistentVolumeClaim") | ("", "PersistentVolume") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            crate::crd::set_accepted_status(obj);
        }
        ("apiregistration.k8s.io", "APIService") => set_api_service_status(obj),
        _ => {}
    }
}

/// An APIService's `Available` condition: `Local` without a service (served by this API
/// server); with a service, unavailable, since mini proxies no aggregated APIs (requests for
/// that group-version are not forwarded to the service).
pub fn set_api_service_status(obj: &mut Value) {
    let service = &obj["spec"]["service"];
    let condition = if service.is_null() {
        json!({"type": "Available", "status": "True", "lastTransitionTime": meta::now_rfc3339(),
               "reason": "Local", "message": "Local APIServices are always available"})
    } else {
        json!({"type": "Available", "status": "False", "lastTransitionTime": meta::now_rfc3339(),
               "reason": "AggregationNotSupported",
               "message": format!(
                   "mini does not proxy aggregated APIs: requests for {}/{} are not forwarded to service {}/{}",
                   obj["spec"]["group"].as_str().unwrap_or_default(),
                   obj["spec"]["version"].as_str().unwrap_or_default(),
                   service["namespace"].as_str().unwrap_or_default(),
                   service["name"].as_str().unwrap_or_default())})
    };
    obj["status"] = json!({"conditions": [condition]});
}

/// Builds the object to store from `old` and what the client sent, per write mode.
pub fn prepare_update(res: &ResourceInfo, old: &Value, incoming: Value, mode: WriteMode) -> Value {
    let mut new = match mode {
        WriteMode::Main => {
            let mut new = incoming;
            if res.custom.is_none() {
                mini_validation::apply_defaults(&res.group, &res.version, &res.kind, &mut new);
            } else if let Some(schema) = res.custom.as_ref().and_then(|c| c.schema.as_ref()) {
                mini_validation::apply_schema_defaults(schema, &mut new);
            }
            if res.has_status() || res.kind == "Pod" {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            new
        }
        WriteMode::Status => {
            let mut new = old.clone();
            match incoming.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            // upstream status strategies keep metadata changes to labels/annotations out too
            new
        }
        WriteMode::Finalize => {
            let mut new = old.clone();
            new["spec"]["finalizers"] = incoming["spec"]["finalizers"].clone();
            new
        }
        WriteMode::Approval => {
            let mut new = old.clone();
            new["status"]["conditions"] = incoming["status"]["conditions"].clone();
            new
        }
    };
    // server-owned metadata always comes from the stored object
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    let incoming_has_managed = new["metadata"].get("managedFields").is_some();
    {
        let m = meta::metadata_mut(&mut new);
        for key in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(key) {
                Some(v) => {
                    m.insert(key.to_string(), v.clone());
                }
                None => {
                    m.remove(key);
                }
            }
        }
        if !incoming_has_managed {
            if let Some(mf) = old_meta.get("managedFields") {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    if mode == WriteMode::Main
        && old["metadata"].get("generation").is_some()
        && spec_changed(old, &new)
    {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    if res.group.is_empty() && res.kind == "Service" {
        keep_allocated_service_fields(old, &mut new);
    }
    new
}

/// Everything outside metadata and status.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| {
                        !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(old) != strip(new)
}

/// Upstream's QoS class: Guaranteed when every container has equal cpu and memory requests
/// and limits, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            if req.get(r).is_some() || lim.get(r).is_some() {
                any = true;
            }
            let l = lim.get(r);
            let q = req.get(r).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Upstream's Job strategy: unless `manualSelector`, the selector is generated from the Job's
/// uid and the template gets the matching labels.
fn generate_job_selector(job: &mut Value) {
    if job["spec"]["manualSelector"].as_bool() == Some(true) {
        return;
    }
    let uid = job["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !job["spec"].is_object() {
        return;
    }
    job["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let template = &mut job["spec"]["template"];
    if !template.is_object() {
        return;
    }
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    let labels = &mut template["metadata"]["labels"];
    labels["batch.kubernetes.io/controller-uid"] = json!(uid);
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["controller-uid"] = json!(uid);
    labels["job-name"] = json!(name);
}

/// Upstream's DefaultTolerationSeconds admission: tolerate not-ready/unreachable for 300 s.
/// Where every container finds its service account credentials.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's pod mutation: `serviceAccountName` defaults to
/// `default`, and unless `automountServiceAccountToken: false` the pod gets a projected
/// `kube-api-access-*` volume (bound token, cluster CA, namespace) mounted read-only in every
/// container that doesn't already mount something at the credentials path.
fn add_service_account_token_volume(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let account = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| spec.get("serviceAccount").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(account));
    spec.insert("serviceAccount".into(), json!(account));
    if spec.get("automountServiceAccountToken") == Some(&Value::Bool(false)) {
        return;
    }
    let volumes_have_token = spec
        .get("volumes")
        .and_then(Value::as_array)
        .is_some_and(|v| {
            v.iter().any(|vol| {
                vol.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with("kube-api-access-"))
            })
        });
    if volumes_have_token {
        return;
    }
    let suffix: String = meta::new_uid()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    });
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts.iter().any(|m| {
                m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_MOUNT_PATH)
            }) {
                continue;
            }
            mounts.push(
                json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}),
            );
            mounted = true;
        }
    }
    if mounted {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(v) = volumes.as_array_mut() {
            v.push(volume);
        }
    }
}

fn add_default_tolerations(pod: &mut Value) {
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        return;
    }
    let tolerations = spec
        .as_object_mut()
        .expect("checked above")
        .entry("tolerations")
        .or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = list.iter().any(|t| {
            (t["key"].as_str() == Some(key)
                || (t.get("key").is_none() && t["operator"] == "Exists"))
                && (t.get("effect").is_none() || t["effect"] == "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

/// On update, a Service keeps its allocated ClusterIP and node ports when the client omits them.
fn keep_allocated_service_fields(old: &Value, new: &mut Value) {
    let spec = &old["spec"];
    for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        if new["spec"].get(key).is_none() {
            if let Some(v) = spec.get(key) {
                new["spec"][key] = v.clone();
            }
        }
    }
    // node ports follow the Service only while it still needs them (a LoadBalancer or NodePort
    // turned ClusterIP drops them, as upstream does)
    let new_type = new["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(new_type, "NodePort" | "LoadBalancer") {
        if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
            // a patch of `type` alone carries the old ports along: release their node ports
            for p in new["spec"]["ports"].as_array_mut().into_iter().flatten() {
                if let Some(p) = p.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
        return;
    }
    let old_ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if let Some(ports) = new["spec"]["ports"].as_array_mut() {
        for p in ports {
            if p.get("nodePort").is_none() {
                if let Some(op) = old_ports
                    .iter()
                    .find(|op| op["port"] == p["port"] && op["protocol"] == p["protocol"])
                {
                    if let Some(np) = op.get("nodePort") {
                        p["nodePort"] = np.clone();
                    }
                }
            }
        }
    }
}

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }],
    )
}

const STORAGE_CLASSES: &str = "/registry/storage.k8s.io/storageclasses/";

/// Upstream's PersistentVolumeClaimResize admission: growing a claim's storage request needs
/// a class that allows volume expansion.
pub async fn check_claim_resize(
    server: &ApiServer,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let storage = |v: &Value| {
        v["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(|s| mini_api::Quantity::parse(s).ok())
            .map(|q| q.milli())
            .unwrap_or(0)
    };
    if storage(new) <= storage(old) {
        return Ok(());
    }
    let class = new["spec"]["storageClassName"].as_str().unwrap_or_default();
    let allowed = if class.is_empty() {
        false
    } else {
        server
            .inner
            .store
            .get(&format!("{STORAGE_CLASSES}{class}"))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .is_some_and(|sc| sc["allowVolumeExpansion"] == json!(true))
    };
    if allowed {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "persistentvolumeclaims {:?} is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
        meta::name(new)
    )))
}

/// Upstream's DefaultStorageClass admission: a claim created without `storageClassName` gets
/// the default class (annotation `storageclass.kubernetes.io/is-default-class: "true"`; the
/// newest when several are marked).
pub async fn default_storage_class(server: &ApiServer, pvc: &mut Value) -> Result<(), ApiError> {
    if pvc["spec"]
        .get("storageClassName")
        .is_some_and(|c| !c.is_null())
    {
        return Ok(());
    }
    let page = server
        .inner
        .store
        .list(STORAGE_CLASSES, None, 0)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let default = page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|sc| {
            let a = &sc["metadata"]["annotations"];
            a["storageclass.kubernetes.io/is-default-class"] == "true"
                || a["storageclass.beta.kubernetes.io/is-default-class"] == "true"
        })
        .max_by(|a, b| {
            let created = |v: &Value| {
                v["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            created(a)
                .cmp(&created(b))
                .then_with(|| meta::name(b).cmp(meta::name(a)))
        });
    if let (Some(sc), Some(spec)) = (default, pvc.get_mut("spec").and_then(Value::as_object_mut)) {
        spec.insert("storageClassName".into(), json!(meta::name(&sc)));
    }
    Ok(())
}

/// Allocates a ClusterIP and node ports for a Service being created or updated. Callers hold
/// `allocation_lock` until the write is done, so two creates never pick the same address.
pub async fn allocate_service(
    server: &ApiServer,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = meta::name(svc).to_string();
    let svc_type = svc["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    let (used_ips, used_ports) = used_allocations(server, old).await?;
    let cidr = server.inner.config.service_cidr;
    if svc_type != "ExternalName" {
        let requested = svc["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let keep = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .map(str::to_string);
        if requested.is_empty() || requested == keep.clone().unwrap_or_default() {
            if requested.is_empty() {
                let ip = match keep {
                    Some(ip) if !ip.is_empty() => ip,
                    _ => {
                        let ip = pick_ip(cidr, &used_ips).ok_or_else(|| {
                            ApiError::internal("failed to allocate a service IP: range is full")
                        })?;
                        ip.to_string()
                    }
                };
                svc["spec"]["clusterIP"] = json!(ip);
            }
        } else if requested != "None" {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                invalid(
                    &name,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{requested}\"}}: must be a valid IP address"
                    ),
                )
            })?;
            if cidr
                .offset_of(ip)
                .is_none_or(|o| o == 0 || o == cidr.size() - 1)
            {
                return Err(invalid(&name, "spec.clusterIPs", format!(
                    "Invalid value: []string{{\"{requested}\"}}: failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {cidr}"
                )));
            }
            if used_ips.contains(&ip) {
                return Err(invalid(&name, "spec.clusterIPs", format!(
                    "Invalid value: []string{{\"{requested}\"}}: failed to allocate IP {requested}: provided IP is already allocated"
                )));
            }
        }
        let ip = svc["spec"]["clusterIP"].clone();
        svc["spec"]["clusterIPs"] = json!([ip]);
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        let (lo, hi) = server.inner.config.node_port_range;
        let mut taken = used_ports;
        if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
            for (i, p) in ports.iter_mut().enumerate() {
                match p["nodePort"].as_u64() {
                    Some(np) => {
                        let np = np as u16;
                        let own = old.is_some_and(|o| {
                            o["spec"]["ports"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|op| op["nodePort"].as_u64() == Some(np as u64))
                        });
                        if !own && !taken.insert(np) {
                            return Err(invalid(
                                &name,
                                &format!("spec.ports[{i}].nodePort"),
                                format!("Invalid value: {np}: provided port is already allocated"),
                            ));
                        }
                        if np < lo || np > hi {
                            return Err(invalid(&name, &format!("spec.ports[{i}].nodePort"), format!(
                                "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                            )));
                        }
                    }
                    None => {
                        let np = pick_port(lo, hi, &taken).ok_or_else(|| {
                            ApiError::internal("failed to allocate a node port: range is full")
                        })?;
                        taken.insert(np);
                        p["nodePort"] = json!(np);
                    }
                }
            }
        }
    } else if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
        for p in ports {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        }
    }
    Ok(())
}

async fn used_allocations(
    server: &ApiServer,
    except: Option<&Value>,
) -> Result<(HashSet<Ipv4Addr>, HashSet<u16>), ApiError> {
    let except_uid = except.map(|o| o["metadata"]["uid"].clone());
    let page = server
        .inner
        .store
        .list("/registry/core/services/", None, 0)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let except_uid = except_uid.as_ref().and_then(Value::as_str);
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for kv in page.items {
        // only the allocated fields are decoded: this runs over every Service per create
        let Ok(svc) = serde_json::from_slice::<AllocatedService>(&kv.value) else {
            continue;
        };
        if except_uid.is_some() && svc.metadata.uid.as_deref() == except_uid {
            continue;
        }
        if let Some(ip) = svc.spec.cluster_ip.and_then(|s| s.parse().ok()) {
            ips.insert(ip);
        }
        ports.extend(svc.spec.ports.iter().flatten().filter_map(|p| p.node_port));
    }
    Ok((ips, ports))
}

/// The parts of a stored Service that hold allocations.
#[derive(serde::Deserialize)]
struct AllocatedService {
    #[serde(default)]
    metadata: AllocatedMeta,
    #[serde(default)]
    spec: AllocatedSpec,
}

#[derive(serde::Deserialize, Default)]
struct AllocatedMeta {
    uid: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct AllocatedSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    ports: Option<Vec<AllocatedPort>>,
}

#[derive(serde::Deserialize)]
struct AllocatedPort {
    #[serde(rename = "nodePort")]
    node_port: Option<u16>,
}

/// A random free address above the low band kept for static assignment (like upstream,
/// which prefers the upper range for dynamic allocation).
fn pick_ip(cidr: crate::Ipv4Cidr, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let size = cidr.size();
    let low = (size / 16).clamp(2, 256).min(size - 2);
    let span = size - 1 - low;
    let start = rand::random::<u32>() % span.max(1);
    (0..span)
        .map(|i| cidr.nth(low + (start + i) % span))
        .find(|ip| !used.contains(ip))
        .or_else(|| (1..low).map(|o| cidr.nth(o)).find(|ip| !used.contains(ip)))
}

fn pick_port(lo: u16, hi: u16, used: &HashSet<u16>) -> Option<u16> {
    let span = (hi - lo) as u32 + 1;
    let start = rand::random::<u32>() % span;
    (0..span)
        .map(|i| lo + ((start + i) % span) as u16)
        .find(|p| !used.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_class_matches_upstream_rules() {
        assert_eq!(
            qos_class(&json!({"containers":[{"name":"a"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&json!({"containers":[{"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]})),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&json!({"containers":[{"resources":{"requests":{"cpu":"1"}}}]})),
            "Burstable"
        );
    }

    #[test]
    fn pod_create_without_opt_out_gets_service_account_token_volume() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b",
            "volumeMounts": [{"name": "own", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}]}]}});
        add_service_account_token_volume(&mut pod);
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        let volume = &pod["spec"]["volumes"][0];
        let name = volume["name"].as_str().expect("volume name");
        assert!(name.starts_with("kube-api-access-"), "{name}");
        assert_eq!(
            volume["projected"]["sources"].as_array().map(Vec::len),
            Some(3)
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][0]["name"],
            name
        );
        // a container that mounts its own credentials keeps them
        assert_eq!(
            pod["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn pod_create_with_automount_false_gets_no_token_volume() {
        let mut pod = json!({"spec": {"serviceAccountName": "builder",
            "automountServiceAccountToken": false, "containers": [{"name": "a"}]}});
        add_service_account_token_volume(&mut pod);
        assert_eq!(pod["spec"]["serviceAccount"], "builder");
        assert!(pod["spec"].get("volumes").is_none());
    }

    #[test]
    fn service_turned_cluster_ip_drops_old_node_ports() {
        let old = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.5",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new =
            json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]}});
        keep_allocated_service_fields(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.5");
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        let mut still =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        keep_allocated_service_fields(&old, &mut still);
        assert_eq!(still["spec"]["ports"][0]["nodePort"], 30080);
    }

    #[test]
    fn pick_ip_skips_used_and_low_band() {
        let cidr = crate::Ipv4Cidr::parse("10.43.0.0/28").unwrap();
        let used: HashSet<Ipv4Addr> = (2..15).map(|o| cidr.nth(o)).collect();
        assert_eq!(pick_ip(cidr, &used), Some(cidr.nth(1)));
    }
}
