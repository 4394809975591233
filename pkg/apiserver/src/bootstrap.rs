//! Objects every cluster starts with (system namespaces, default RBAC, the `kubernetes`
//! Service and its endpoints, the `kube-system/kube-dns` Service).

use mini_api::meta;
use serde_json::{json, Value};

use crate::{ApiServer, ApiServerError};

/// The identity of the in-process controllers.
pub const CONTROLLERS_USER: &str = "system:kube-controller-manager";
/// The identity of the in-process scheduler (bound to upstream's `system:kube-scheduler` role).
pub const SCHEDULER_USER: &str = "system:kube-scheduler";

const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn create_if_missing(
    server: &ApiServer,
    key: &str,
    mut obj: Value,
) -> Result<(), ApiServerError> {
    if server.inner.store.get(key).await?.is_some() {
        return Ok(());
    }
    {
        let m = meta::metadata_mut(&mut obj);
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    }
    match server
        .inner
        .store
        .create(key, meta::to_storage_bytes(&obj))
        .await
    {
        Ok(_) | Err(mini_store::StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sets `field` of the stored object at `key` to `new` when it is exactly `was` (a default
/// an older mini wrote, which nobody changed since).
async fn replace_field_if(
    server: &ApiServer,
    key: &str,
    field: &str,
    was: &Value,
    new: Value,
) -> Result<(), ApiServerError> {
    let Some(kv) = server.inner.store.get(key).await? else {
        return Ok(());
    };
    let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
        return Ok(());
    };
    if obj.get(field) != Some(was) {
        return Ok(());
    }
    obj[field] = new;
    tracing::info!(key, field, "updating a default written by an older mini");
    match server
        .inner
        .store
        .update(key, meta::to_storage_bytes(&obj), Some(kv.mod_revision))
        .await
    {
        Ok(_) | Err(mini_store::StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates what is missing; never overwrites what an admin changed.
pub async fn ensure_cluster_objects(server: &ApiServer) -> Result<(), ApiServerError> {
    for ns in SYSTEM_NAMESPACES {
        create_if_missing(
            server,
            &format!("/registry/core/namespaces/{ns}"),
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        )
        .await?;
    }
    for role in mini_rbac::bootstrap_cluster_roles() {
        let key = format!(
            "/registry/rbac.authorization.k8s.io/clusterroles/{}",
            meta::name(&role)
        );
        create_if_missing(server, &key, role).await?;
    }
    for binding in mini_rbac::bootstrap_cluster_role_bindings() {
        let key = format!(
            "/registry/rbac.authorization.k8s.io/clusterrolebindings/{}",
            meta::name(&binding)
        );
        create_if_missing(server, &key, binding).await?;
    }
    // the agent's bootstrap identity may create CSRs (used when nodes join)
    create_if_missing(
        server,
        "/registry/rbac.authorization.k8s.io/clusterrolebindings/mini:node-bootstrapper",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "mini:node-bootstrapper"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-bootstrapper"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:bootstrappers"}]}),
    )
    .await?;
    // node agents: the Node authorizer (mini-nodeauthz) grants upstream's node rules, limited
    // to what each node's pods use; mini's agent also reads namespaces (DNS search paths,
    // network policies). Servers bootstrapped before the Node authorizer get the old grants
    // (cluster-wide claims, volumes, leases; system:node bound to every node) taken back.
    let node_rules = json!([
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}
    ]);
    let role_key = "/registry/rbac.authorization.k8s.io/clusterroles/mini:node";
    create_if_missing(
        server,
        role_key,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "mini:node"}, "rules": node_rules}),
    )
    .await?;
    let before_node_authorizer = json!([
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims", "persistentvolumes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update", "patch"]}
    ]);
    replace_field_if(
        server,
        role_key,
        "rules",
        &before_node_authorizer,
        node_rules,
    )
    .await?;
    replace_field_if(
        server,
        "/registry/rbac.authorization.k8s.io/clusterrolebindings/system:node",
        "subjects",
        &json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]),
        json!([]),
    )
    .await?;
    create_if_missing(
        server,
        "/registry/rbac.authorization.k8s.io/clusterrolebindings/mini:node",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "mini:node"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mini:node"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]}),
    )
    .await?;
    // the in-process controllers act cluster-wide on every workload kind, as kube-controller-manager
    // does with its per-controller service accounts; mini gives its one identity the admin role
    create_if_missing(
        server,
        "/registry/rbac.authorization.k8s.io/clusterrolebindings/mini:controllers",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "mini:controllers"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLERS_USER}]}),
    )
    .await?;
    ensure_kubernetes_service(server).await?;
    ensure_kube_dns_service(server).await?;
    ensure_local_api_services(server).await?;
    Ok(())
}

/// One `Local` APIService per built-in group-version (`v1.`, `v1.apps`, ...), as upstream's
/// autoregistration makes them, so `kubectl get apiservices` lists what this server serves.
async fn ensure_local_api_services(server: &ApiServer) -> Result<(), ApiServerError> {
    let groups = server.registry().groups();
    for (group_priority, (group, versions)) in groups.into_iter().enumerate() {
        let count = versions.len();
        for (i, version) in versions.into_iter().enumerate() {
            let name = format!("{version}.{group}");
            let mut obj = json!({
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version,
                         "groupPriorityMinimum": 18000 - 100 * group_priority.min(170) as i64,
                         "versionPriority": 15 + (count - i) as i64},
            });
            crate::admission::set_api_service_status(&mut obj);
            create_if_missing(
                server,
                &format!("/registry/apiregistration.k8s.io/apiservices/{name}"),
                obj,
            )
            .await?;
        }
    }
    Ok(())
}

/// The `kube-system/kube-dns` Service at the 10th address of the service CIDR (what pods get as
/// their nameserver). It has no selector: every node's agent serves DNS itself and the node's
/// proxy sends traffic for this address to it (`mini.dev/node-local-dns`). Left alone when the
/// address already belongs to another Service, which the allocator would refuse anyway.
async fn ensure_kube_dns_service(server: &ApiServer) -> Result<(), ApiServerError> {
    let key = "/registry/core/services/kube-system/kube-dns";
    if server.inner.store.get(key).await?.is_some() {
        return Ok(());
    }
    let ip = server.inner.config.service_cidr.nth(10).to_string();
    let services = server
        .inner
        .store
        .list("/registry/core/services/", None, 0)
        .await?;
    let taken = services.items.iter().any(|kv| {
        serde_json::from_slice::<Value>(&kv.value)
            .is_ok_and(|svc| svc["spec"]["clusterIP"].as_str() == Some(ip.as_str()))
    });
    if taken {
        tracing::warn!(%ip, "not creating kube-system/kube-dns: its address belongs to another service");
        return Ok(());
    }
    create_if_missing(
        server,
        key,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kube-dns", "namespace": "kube-system",
                            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                       "kubernetes.io/name": "CoreDNS"},
                            "annotations": {"mini.dev/node-local-dns": "true"}},
               "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None",
                        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                                  {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
               "status": {"loadBalancer": {}}}),
    )
    .await
}

/// Whether the `kubernetes` Endpoints or EndpointSlice `obj` lists `ip` on `port` already.
fn lists_address(obj: &Value, ip: &str, port: u16) -> bool {
    let has_port = |ports: Option<&Value>| {
        ports.and_then(Value::as_array).is_some_and(|ps| {
            ps.iter()
                .any(|p| p["port"].as_u64() == Some(u64::from(port)))
        })
    };
    if let Some(subsets) = obj.get("subsets").and_then(Value::as_array) {
        return subsets.iter().any(|s| {
            has_port(s.get("ports"))
                && s["addresses"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["ip"] == ip))
        });
    }
    has_port(obj.get("ports"))
        && obj["endpoints"].as_array().is_some_and(|es| {
            es.iter().any(|e| {
                e["addresses"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a == ip))
            })
        })
}

/// Adds this server's entry of `wanted` (one address, one port) to `current`: into the subset
/// (or slice) with the same port, else in place of what is there.
fn merge_address(current: &mut Value, wanted: &Value, ip: &str, port: u16) {
    let same_port = |ports: &Value| {
        ports.as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["port"].as_u64() == Some(u64::from(port)))
        })
    };
    if wanted.get("subsets").is_some() {
        let subsets = current["subsets"].as_array_mut();
        if let Some(subset) = subsets.and_then(|ss| ss.iter_mut().find(|s| same_port(&s["ports"])))
        {
            if let Some(addresses) = subset["addresses"].as_array_mut() {
                addresses.push(json!({"ip": ip}));
                return;
            }
        }
        current["subsets"] = wanted["subsets"].clone();
        return;
    }
    if same_port(&current["ports"]) {
        if let Some(endpoints) = current["endpoints"].as_array_mut() {
            endpoints.push(json!({"addresses": [ip], "conditions": {"ready": true}}));
            return;
        }
    }
    current["endpoints"] = wanted["endpoints"].clone();
    current["ports"] = wanted["ports"].clone();
}

async fn ensure_kubernetes_service(server: &ApiServer) -> Result<(), ApiServerError> {
    let cfg = &server.inner.config;
    let ip = cfg.service_cidr.nth(1).to_string();
    create_if_missing(
        server,
        "/registry/core/services/default/kubernetes",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None",
                        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": cfg.advertise_port}]},
               "status": {"loadBalancer": {}}}),
    )
    .await?;
    let address = cfg.advertise_address.to_string();
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": cfg.advertise_port, "protocol": "TCP"}]}]});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": cfg.advertise_port, "protocol": "TCP"}]});
    // the advertise address may change between starts: this server's address joins the ones
    // listed (other servers of the cluster stay; each server's peer reconciler, mini-peers,
    // drops the ones whose Lease expired)
    for (key, obj) in [
        ("/registry/core/endpoints/default/kubernetes", endpoints),
        (
            "/registry/discovery.k8s.io/endpointslices/default/kubernetes",
            slice,
        ),
    ] {
        match server.inner.store.get(key).await? {
            None => create_if_missing(server, key, obj).await?,
            Some(kv) => {
                let mut current: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                if !lists_address(&current, &address, cfg.advertise_port) {
                    merge_address(&mut current, &obj, &address, cfg.advertise_port);
                    server
                        .inner
                        .store
                        .update(key, meta::to_storage_bytes(&current), Some(kv.mod_revision))
                        .await?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(ips: &[&str], port: u16) -> Value {
        let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        json!({"subsets": [{"addresses": addresses, "ports": [{"name": "https", "port": port}]}]})
    }

    fn slice(ips: &[&str], port: u16) -> Value {
        let items: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect();
        json!({"endpoints": items, "ports": [{"name": "https", "port": port}]})
    }

    #[test]
    fn lists_address_other_servers_listed_is_false_until_merged() {
        let mut current = endpoints(&["10.0.0.1", "10.0.0.2"], 6443);
        assert!(lists_address(&current, "10.0.0.2", 6443));
        assert!(!lists_address(&current, "10.0.0.3", 6443));
        assert!(!lists_address(&current, "10.0.0.2", 7443));
        merge_address(
            &mut current,
            &endpoints(&["10.0.0.3"], 6443),
            "10.0.0.3",
            6443,
        );
        assert_eq!(
            current,
            endpoints(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], 6443)
        );
    }

    #[test]
    fn merge_address_other_port_replaces_subsets() {
        let mut current = endpoints(&["10.0.0.1"], 6443);
        merge_address(
            &mut current,
            &endpoints(&["10.0.0.9"], 7443),
            "10.0.0.9",
            7443,
        );
        assert_eq!(current, endpoints(&["10.0.0.9"], 7443));
    }

    #[test]
    fn merge_address_slice_keeps_other_servers() {
        let mut current = slice(&["10.0.0.1"], 6443);
        assert!(!lists_address(&current, "10.0.0.2", 6443));
        merge_address(&mut current, &slice(&["10.0.0.2"], 6443), "10.0.0.2", 6443);
        assert_eq!(current, slice(&["10.0.0.1", "10.0.0.2"], 6443));
        assert!(lists_address(&current, "10.0.0.2", 6443));
    }
}
