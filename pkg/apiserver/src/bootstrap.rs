//! Objects every cluster starts with (system namespaces, default RBAC, the `kubernetes`
//! Service and its endpoints), and finishing namespace deletion.

use std::time::Duration;

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
    // resume namespace deletions interrupted by a restart
    let page = server
        .inner
        .store
        .list("/registry/core/namespaces/", None, 0)
        .await?;
    for kv in page.items {
        if let Ok(ns) = serde_json::from_slice::<Value>(&kv.value) {
            if ns["metadata"].get("deletionTimestamp").is_some() {
                finalize_namespace_later(server.clone(), meta::name(&ns).to_string());
            }
        }
    }
    Ok(())
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
    // the advertise address may change between starts: keep these current
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
                let fields = ["subsets", "endpoints", "ports"];
                if fields.iter().any(|f| current.get(*f) != obj.get(*f)) {
                    for f in fields {
                        if let Some(v) = obj.get(f) {
                            current[f] = v.clone();
                        }
                    }
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

/// Empties a terminating namespace, then removes it. Until the namespace controller exists
/// this runs in the API server itself.
pub fn finalize_namespace_later(server: ApiServer, namespace: String) {
    tokio::spawn(async move {
        for attempt in 0..60u64 {
            match finalize_namespace(&server, &namespace).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(namespace, error = %e, "namespace cleanup failed"),
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1).min(10))).await;
        }
    });
}

/// One pass: deletes the namespace's objects; true once the namespace itself is gone.
async fn finalize_namespace(server: &ApiServer, namespace: &str) -> Result<bool, ApiServerError> {
    let store = &server.inner.store;
    let registry = server.registry();
    let mut remaining = 0usize;
    for res in registry
        .resources()
        .iter()
        .filter(|r| r.namespaced && r.storage == mini_api::Storage::Stored)
    {
        let prefix = res.namespace_prefix(Some(namespace));
        let page = store.list(&prefix, None, 0).await?;
        for kv in page.items {
            let obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if !meta::finalizers(&obj).is_empty() {
                remaining += 1;
                if obj["metadata"].get("deletionTimestamp").is_none() {
                    let mut o = obj.clone();
                    meta::metadata_mut(&mut o)
                        .insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
                    let _ = store
                        .update(&kv.key, meta::to_storage_bytes(&o), Some(kv.mod_revision))
                        .await;
                }
                continue;
            }
            match store.delete(&kv.key, None).await {
                Ok(_) | Err(mini_store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    let key = format!("/registry/core/namespaces/{namespace}");
    match store.get(&key).await? {
        None => Ok(true),
        Some(kv) => {
            let ns: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if ns["metadata"].get("deletionTimestamp").is_none() {
                return Ok(true);
            }
            if !meta::finalizers(&ns).is_empty() {
                return Ok(false);
            }
            match store.delete(&key, Some(kv.mod_revision)).await {
                Ok(_) | Err(mini_store::StoreError::NotFound { .. }) => Ok(true),
                Err(mini_store::StoreError::Conflict { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    }
}
