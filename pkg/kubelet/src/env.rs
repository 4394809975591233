//! A container's environment as upstream's `makeEnvironmentVariables`: `envFrom` (configMap /
//! secret, prefix, optional), then `env` (value with `$(VAR)` expansion, valueFrom configMapKeyRef,
//! secretKeyRef, fieldRef, resourceFieldRef), and the `$(VAR)` expansion of command and args.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;

/// Why a container's environment could not be built (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("reading {kind} {name}: {source}")]
    Api {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("env {name}: {message}")]
    Invalid { name: String, message: String },
}

/// Machine totals used for resourceFieldRef limits that the container does not set (upstream
/// falls back to node allocatable).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeAllocatable {
    pub cpu_cores: f64,
    pub memory_bytes: f64,
}

/// Where configMaps and secrets come from (the API, or a map in tests).
pub(crate) struct EnvSources<'a> {
    pub client: &'a kube::Client,
    pub allocatable: NodeAllocatable,
}

impl EnvSources<'_> {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, EnvError> {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|source| EnvError::Api {
                kind: "configmap",
                name: name.to_string(),
                source,
            })
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, EnvError> {
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|source| EnvError::Api {
                kind: "secret",
                name: name.to_string(),
                source,
            })
    }
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, String> {
    let mut out = cm.data.clone().unwrap_or_default();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
    }
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Upstream's `$(VAR)` expansion: defined references are replaced, `$$` escapes a `$`,
/// undefined references stay as written.
pub(crate) fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                '$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                '(' => {
                    if let Some(end) = bytes[i + 2..].iter().position(|c| *c == ')') {
                        let name: String = bytes[i + 2..i + 2 + end].iter().collect();
                        match vars(&name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(&name);
                                out.push(')');
                            }
                        }
                        i += end + 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// A downward-API field of the pod (`metadata.name`, `metadata.labels['k']`, `status.podIP`...),
/// the same values downwardAPI volumes show. `pod.status` must already carry the pod and host
/// IPs the kubelet knows.
pub(crate) fn field_ref_value(pod: &Pod, path: &str) -> Result<String, String> {
    mini_volumes::downward::field_ref_value(pod, path).map_err(|e| e.to_string())
}

/// A resourceFieldRef value (`limits.cpu`, `requests.memory`, ...) divided by `divisor` and
/// rounded up; unset limits fall back to the node's allocatable, as upstream.
pub(crate) fn resource_field_value(
    pod: &Pod,
    container_name: &str,
    resource: &str,
    divisor: Option<&Quantity>,
    allocatable: NodeAllocatable,
) -> Result<String, String> {
    let node = BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(format!("{}", allocatable.cpu_cores)),
        ),
        (
            "memory".to_string(),
            Quantity(format!("{}", allocatable.memory_bytes as u64)),
        ),
    ]);
    mini_volumes::downward::resource_field_value(pod, container_name, resource, divisor, &node)
        .map_err(|e| e.to_string())
}

/// The environment of `container` in `pod`, in order, as (name, value) pairs.
pub(crate) async fn container_env(
    sources: &EnvSources<'_>,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = crate::spec::pod_namespace(pod);
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_map(&ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in config_map_data(&cm) {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secret(&ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in secret_data(&s) {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match sources.config_map(&ns, &r.name).await? {
                    Some(cm) => match config_map_data(&cm).remove(&r.key) {
                        Some(v) => v,
                        None if optional => continue,
                        None => {
                            return Err(EnvError::KeyNotFound {
                                kind: "configmap",
                                namespace: ns.clone(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            })
                        }
                    },
                    None if optional => continue,
                    None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match sources.secret(&ns, &r.name).await? {
                    Some(s) => match secret_data(&s).remove(&r.key) {
                        Some(v) => v,
                        None if optional => continue,
                        None => {
                            return Err(EnvError::KeyNotFound {
                                kind: "secret",
                                namespace: ns.clone(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            })
                        }
                    },
                    None if optional => continue,
                    None => return Err(EnvError::SecretNotFound(r.name.clone())),
                }
            } else if let Some(r) = &from.field_ref {
                field_ref_value(pod, &r.field_path).map_err(|message| EnvError::Invalid {
                    name: var.name.clone(),
                    message,
                })?
            } else if let Some(r) = &from.resource_field_ref {
                let cname = r
                    .container_name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| container.name.clone());
                resource_field_value(
                    pod,
                    &cname,
                    &r.resource,
                    r.divisor.as_ref(),
                    sources.allocatable,
                )
                .map_err(|message| EnvError::Invalid {
                    name: var.name.clone(),
                    message,
                })?
            } else {
                String::new()
            }
        } else {
            let raw = var.value.clone().unwrap_or_default();
            let snapshot = env.clone();
            expand(&raw, &|name| {
                snapshot
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// `$(VAR)` expansion of a command or args list against the final environment.
pub(crate) fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    items.iter().map(|s| expand(s, &lookup)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("x".into()),
            _ => None,
        }
    }

    #[test]
    fn expand_replaces_known_and_keeps_unknown_and_escapes() {
        assert_eq!(expand("$(A)-$(B)", &vars), "x-$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("a$", &vars), "a$");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    fn test_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}]},
            "status": {"podIP": "10.42.0.7", "hostIP": "10.0.0.1"}
        }))
        .expect("pod")
    }

    #[test]
    fn field_ref_value_reads_metadata_spec_and_status() {
        let p = test_pod();
        assert_eq!(field_ref_value(&p, "metadata.name").as_deref(), Ok("p"));
        assert_eq!(
            field_ref_value(&p, "metadata.labels['app']").as_deref(),
            Ok("a")
        );
        assert_eq!(field_ref_value(&p, "spec.nodeName").as_deref(), Ok("n1"));
        assert_eq!(
            field_ref_value(&p, "status.podIP").as_deref(),
            Ok("10.42.0.7")
        );
        assert!(field_ref_value(&p, "spec.bogus").is_err());
    }

    #[test]
    fn resource_field_value_divides_and_falls_back_to_allocatable() {
        let p = test_pod();
        let alloc = NodeAllocatable {
            cpu_cores: 4.0,
            memory_bytes: 1e9,
        };
        assert_eq!(
            resource_field_value(
                &p,
                "c",
                "limits.memory",
                Some(&Quantity("1Mi".into())),
                alloc
            )
            .as_deref(),
            Ok("64")
        );
        assert_eq!(
            resource_field_value(&p, "c", "requests.cpu", Some(&Quantity("1m".into())), alloc)
                .as_deref(),
            Ok("250")
        );
        assert_eq!(
            resource_field_value(&p, "c", "limits.cpu", None, alloc).as_deref(),
            Ok("4")
        );
    }
}
