//! Namespace policy admission: LimitRange defaults and bounds for pod containers, and
//! ResourceQuota enforcement on create (usage counted from the store at admission time).

use std::collections::BTreeMap;

use mini_api::{meta, ApiError, Quantity, ResourceInfo};
use serde_json::{json, Value};

use crate::handlers::store_error;
use crate::ApiServer;

async fn namespace_objects(server: &ApiServer, prefix: String) -> Result<Vec<Value>, ApiError> {
    let page = server
        .inner
        .store
        .list(&prefix, None, 0)
        .await
        .map_err(store_error)?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

fn forbidden(res: &ResourceInfo, name: &str, message: String) -> ApiError {
    ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: {message}",
        res.qualified_plural()
    ))
}

/// Applies `Container` LimitRange defaults to a new pod and enforces min/max.
pub async fn apply_limit_ranges(
    server: &ApiServer,
    res: &ResourceInfo,
    pod: &mut Value,
) -> Result<(), ApiError> {
    if !(res.group.is_empty() && res.kind == "Pod") {
        return Ok(());
    }
    let ns = meta::namespace(pod).to_string();
    let ranges = namespace_objects(server, format!("/registry/core/limitranges/{ns}/")).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    let name = meta::name(pod).to_string();
    for range in &ranges {
        for item in range["spec"]["limits"].as_array().into_iter().flatten() {
            if item["type"] != "Container" {
                continue;
            }
            for list in ["initContainers", "containers"] {
                let Some(containers) = pod["spec"][list].as_array_mut() else {
                    continue;
                };
                for c in containers {
                    if !c["resources"].is_object() {
                        c["resources"] = json!({});
                    }
                    for (field, default_key) in
                        [("limits", "default"), ("requests", "defaultRequest")]
                    {
                        if let Some(defaults) = item[default_key].as_object() {
                            for (r, q) in defaults {
                                if c["resources"][field].get(r).is_none() {
                                    if !c["resources"][field].is_object() {
                                        c["resources"][field] = json!({});
                                    }
                                    c["resources"][field][r] = q.clone();
                                }
                            }
                        }
                    }
                    // upstream: a request defaults to the limit when only the limit is known
                    if let Some(limits) = c["resources"]["limits"].as_object().cloned() {
                        for (r, q) in limits {
                            if c["resources"]["requests"].get(&r).is_none() {
                                if !c["resources"]["requests"].is_object() {
                                    c["resources"]["requests"] = json!({});
                                }
                                c["resources"]["requests"][&r] = q;
                            }
                        }
                    }
                    for (r, max) in item["max"].as_object().into_iter().flatten() {
                        let max_q = Quantity::from_json(max);
                        match c["resources"]["limits"].get(r) {
                            Some(l) if Quantity::from_json(l) > max_q => {
                                return Err(forbidden(
                                    res,
                                    &name,
                                    format!(
                                    "maximum {r} usage per Container is {max_q}, but limit is {}",
                                    Quantity::from_json(l)
                                ),
                                ));
                            }
                            None => {
                                return Err(forbidden(res, &name, format!(
                                    "maximum {r} usage per Container is {max_q}.  No limit is specified"
                                )));
                            }
                            _ => {}
                        }
                    }
                    for (r, min) in item["min"].as_object().into_iter().flatten() {
                        let min_q = Quantity::from_json(min);
                        match c["resources"]["requests"].get(r) {
                            Some(q) if Quantity::from_json(q) < min_q => {
                                return Err(forbidden(
                                    res,
                                    &name,
                                    format!(
                                    "minimum {r} usage per Container is {min_q}, but request is {}",
                                    Quantity::from_json(q)
                                ),
                                ));
                            }
                            None => {
                                return Err(forbidden(res, &name, format!(
                                    "minimum {r} usage per Container is {min_q}.  No request is specified"
                                )));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Compute resources a pod uses: the sum over containers, init containers taking the max.
fn pod_usage(pod: &Value) -> BTreeMap<String, Quantity> {
    let mut out: BTreeMap<String, Quantity> = BTreeMap::new();
    for (field, prefix) in [("requests", "requests."), ("limits", "limits.")] {
        let mut sums: BTreeMap<String, Quantity> = BTreeMap::new();
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            for (r, q) in c["resources"][field].as_object().into_iter().flatten() {
                *sums.entry(r.clone()).or_default() += Quantity::from_json(q);
            }
        }
        for c in pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for (r, q) in c["resources"][field].as_object().into_iter().flatten() {
                let q = Quantity::from_json(q);
                let e = sums.entry(r.clone()).or_default();
                if q > *e {
                    *e = q;
                }
            }
        }
        for (r, q) in sums {
            if field == "requests" && (r == "cpu" || r == "memory") {
                out.insert(r.clone(), q);
            }
            out.insert(format!("{prefix}{r}"), q);
        }
    }
    out
}

/// What one object counts against quota.
fn usage(res: &ResourceInfo, obj: &Value) -> BTreeMap<String, Quantity> {
    let one = Quantity(1000);
    let mut out = BTreeMap::new();
    let count_key = if res.group.is_empty() {
        format!("count/{}", res.plural)
    } else {
        format!("count/{}.{}", res.plural, res.group)
    };
    out.insert(count_key, one);
    match (res.group.as_str(), res.kind.as_str()) {
        ("", "Pod") => {
            if matches!(
                obj["status"]["phase"].as_str(),
                Some("Succeeded") | Some("Failed")
            ) {
                return BTreeMap::new();
            }
            out.insert("pods".into(), one);
            out.extend(pod_usage(obj));
        }
        ("", "Service") => {
            out.insert("services".into(), one);
            let t = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if t == "NodePort" || t == "LoadBalancer" {
                let ports = obj["spec"]["ports"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0) as i128;
                out.insert("services.nodeports".into(), Quantity(ports * 1000));
            }
            if t == "LoadBalancer" {
                out.insert("services.loadbalancers".into(), one);
            }
        }
        ("", "PersistentVolumeClaim") => {
            out.insert("persistentvolumeclaims".into(), one);
            out.insert(
                "requests.storage".into(),
                Quantity::from_json(&obj["spec"]["resources"]["requests"]["storage"]),
            );
        }
        ("", "ConfigMap")
        | ("", "Secret")
        | ("", "ReplicationController")
        | ("", "ResourceQuota") => {
            out.insert(res.plural.clone(), one);
        }
        _ => {}
    }
    out
}

/// Whether objects of `res` count towards the quota resource `key`.
fn contributes(res: &ResourceInfo, key: &str) -> bool {
    let count_key = if res.group.is_empty() {
        format!("count/{}", res.plural)
    } else {
        format!("count/{}.{}", res.plural, res.group)
    };
    if key == count_key {
        return true;
    }
    if !res.group.is_empty() {
        return false;
    }
    match res.kind.as_str() {
        "Pod" => {
            key == "pods"
                || key == "cpu"
                || key == "memory"
                || ((key.starts_with("requests.") || key.starts_with("limits."))
                    && key != "requests.storage")
        }
        "Service" => key.starts_with("services"),
        "PersistentVolumeClaim" => key == "persistentvolumeclaims" || key == "requests.storage",
        _ => key == res.plural,
    }
}

/// Rejects a create that would exceed a ResourceQuota of the namespace (403 with upstream's
/// `exceeded quota` wording). Callers hold `quota_lock` through the write.
pub async fn check_quota<'a>(
    server: &'a ApiServer,
    res: &ResourceInfo,
    obj: &Value,
) -> Result<Option<tokio::sync::MutexGuard<'a, ()>>, ApiError> {
    if !res.namespaced {
        return Ok(None);
    }
    let ns = meta::namespace(obj).to_string();
    let quotas = namespace_objects(server, format!("/registry/core/resourcequotas/{ns}/")).await?;
    if quotas.is_empty() {
        return Ok(None);
    }
    let guard = server.inner.quota_lock.lock().await;
    let delta = usage(res, obj);
    let name = meta::name(obj).to_string();
    let registry = server.registry();
    for quota in &quotas {
        let Some(hard) = quota["spec"]["hard"].as_object() else {
            continue;
        };
        let constrained: Vec<&String> = hard.keys().filter(|k| delta.contains_key(*k)).collect();
        // pods must declare what a quota constrains
        if res.group.is_empty() && res.kind == "Pod" {
            let missing: Vec<&str> = hard
                .keys()
                .filter(|k| {
                    k.starts_with("requests.")
                        || k.starts_with("limits.")
                        || *k == "cpu"
                        || *k == "memory"
                })
                .filter(|k| !delta.contains_key(*k))
                .map(|k| k.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(forbidden(
                    res,
                    &name,
                    format!(
                        "failed quota: {}: must specify {}",
                        meta::name(quota),
                        missing.join(",")
                    ),
                ));
            }
        }
        if constrained.is_empty() {
            continue;
        }
        // current usage of the constrained resources, from the store
        let mut used: BTreeMap<String, Quantity> = BTreeMap::new();
        for other in registry.resources().iter().filter(|r| {
            r.namespaced && r.custom.is_none() && r.storage == mini_api::Storage::Stored
        }) {
            if !constrained.iter().any(|k| contributes(other, k)) {
                continue;
            }
            for existing in namespace_objects(server, other.namespace_prefix(Some(&ns))).await? {
                for (k, q) in usage(other, &existing) {
                    if constrained.iter().any(|c| **c == k) {
                        *used.entry(k).or_default() += q;
                    }
                }
            }
        }
        let mut exceeded: Vec<Exceeded> = Vec::new();
        for k in &constrained {
            let limit = Quantity::from_json(&hard[k.as_str()]);
            let requested = delta[k.as_str()];
            let now = used.get(k.as_str()).copied().unwrap_or_default();
            if now + requested > limit {
                exceeded.push(Exceeded {
                    resource: (*k).clone(),
                    requested,
                    used: now,
                    limit,
                });
            }
        }
        if !exceeded.is_empty() {
            let list = |f: fn(&Exceeded) -> Quantity| {
                exceeded
                    .iter()
                    .map(|e| format!("{}={}", e.resource, f(e)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(forbidden(
                res,
                &name,
                format!(
                    "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                    meta::name(quota),
                    list(|e| e.requested),
                    list(|e| e.used),
                    list(|e| e.limit),
                ),
            ));
        }
    }
    Ok(Some(guard))
}

struct Exceeded {
    resource: String,
    requested: Quantity,
    used: Quantity,
    limit: Quantity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_usage_sums_containers_and_maxes_init_containers() {
        let pod = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m"}}},
                {"resources": {"requests": {"cpu": "400m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        let u = pod_usage(&pod);
        assert_eq!(u["requests.cpu"].to_string(), "1");
        assert_eq!(u["cpu"].to_string(), "1");
        assert_eq!(u["requests.memory"].to_string(), "64Mi");
        assert_eq!(u["limits.cpu"].to_string(), "200m");
    }
}
