//! Downward API values: pod fields (`fieldRef`) and container resources (`resourceFieldRef`)
//! rendered as strings, the way upstream's kubelet does for env `valueFrom` and for
//! downwardAPI volume files.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::VolumeError;

/// The value of a `fieldRef` path for `pod`.
///
/// Supported paths: `metadata.name`, `metadata.namespace`, `metadata.uid`, `metadata.labels`,
/// `metadata.annotations`, `metadata.labels['k']`, `metadata.annotations['k']`,
/// `spec.nodeName`, `spec.serviceAccountName`, `status.podIP`, `status.podIPs`,
/// `status.hostIP`, `status.hostIPs`. Whole label/annotation maps are `k="v"` lines sorted by
/// key (Go-quoted values, no trailing newline), as upstream's `FormatMap`. A missing subscripted
/// key is the empty string. Status fields are read from `pod.status`: the kubelet fills them
/// from the sandbox before asking.
pub fn field_ref_value(pod: &Pod, field_path: &str) -> Result<String, VolumeError> {
    let meta = &pod.metadata;
    if let Some((base, key)) = split_subscript(field_path) {
        let map = match base {
            "metadata.labels" => &meta.labels,
            "metadata.annotations" => &meta.annotations,
            _ => return Err(VolumeError::UnsupportedFieldPath(field_path.to_string())),
        };
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let value = match field_path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| {
            s.pod_ip
                .clone()
                .or_else(|| s.pod_ips.as_ref()?.first().map(|ip| ip.ip.clone()))
        }),
        "status.podIPs" => status.map(|s| match &s.pod_ips {
            Some(ips) if !ips.is_empty() => ips
                .iter()
                .map(|ip| ip.ip.as_str())
                .collect::<Vec<_>>()
                .join(","),
            _ => s.pod_ip.clone().unwrap_or_default(),
        }),
        "status.hostIP" => status.and_then(|s| {
            s.host_ip
                .clone()
                .or_else(|| s.host_ips.as_ref()?.first().map(|ip| ip.ip.clone()))
        }),
        "status.hostIPs" => status.map(|s| match &s.host_ips {
            Some(ips) if !ips.is_empty() => ips
                .iter()
                .map(|ip| ip.ip.as_str())
                .collect::<Vec<_>>()
                .join(","),
            _ => s.host_ip.clone().unwrap_or_default(),
        }),
        _ => return Err(VolumeError::UnsupportedFieldPath(field_path.to_string())),
    };
    Ok(value.unwrap_or_default())
}

/// The value of a `resourceFieldRef` for container `container_name` of `pod`, divided by
/// `divisor` (default `1`) and rounded up as upstream: CPU as `ceil(milli / divisor milli)`,
/// memory, ephemeral storage and hugepages as `ceil(bytes / divisor bytes)`.
///
/// `resource` is `limits.<r>` or `requests.<r>` with `<r>` one of `cpu`, `memory`,
/// `ephemeral-storage`, `hugepages-<size>`. An unset limit is the node's allocatable value
/// (upstream's `MergeContainerResourceLimits`); an unset request is `0`.
pub fn resource_field_value(
    pod: &Pod,
    container_name: &str,
    resource: &str,
    divisor: Option<&Quantity>,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, VolumeError> {
    let container = find_container(pod, container_name)
        .ok_or_else(|| VolumeError::ContainerNotFound(container_name.to_string()))?;
    let unsupported = || VolumeError::UnsupportedResource(resource.to_string());
    let (kind, name) = resource.split_once('.').ok_or_else(unsupported)?;
    let is_cpu = name == "cpu";
    if !(is_cpu
        || name == "memory"
        || name == "ephemeral-storage"
        || name.starts_with("hugepages-"))
    {
        return Err(unsupported());
    }
    let resources = container.resources.as_ref();
    let value = match kind {
        "limits" => resources
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(name))
            .or_else(|| node_allocatable.get(name)),
        "requests" => resources
            .and_then(|r| r.requests.as_ref())
            .and_then(|l| l.get(name)),
        _ => return Err(unsupported()),
    };
    let milli = match value {
        Some(q) => parse_milli(q, resource)?,
        None => 0,
    };
    let divisor_milli = match divisor {
        Some(d) => parse_milli(d, "divisor")?,
        None => 0,
    };
    let divisor_milli = if divisor_milli <= 0 {
        1000
    } else {
        divisor_milli
    };
    let result = if is_cpu {
        ceil_div(milli, divisor_milli)
    } else {
        // upstream divides Value() (whole units, rounded up) by the divisor's Value()
        let units = ceil_div(milli, 1000);
        let divisor_units = ceil_div(divisor_milli, 1000).max(1);
        ceil_div(units, divisor_units)
    };
    Ok(result.to_string())
}

/// A container of the pod by name: regular, init, or ephemeral.
fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

fn parse_milli(q: &Quantity, what: &str) -> Result<i128, VolumeError> {
    mini_api::Quantity::parse(&q.0)
        .map(|q| q.milli())
        .map_err(|e| VolumeError::InvalidQuantity {
            what: what.to_string(),
            message: e.to_string(),
        })
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if a <= 0 {
        // quantities here are non-negative; keep upstream's ceil semantics for zero
        return a / b;
    }
    (a + b - 1) / b
}

/// `metadata.labels['k']` -> (`metadata.labels`, `k`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    Some((base, key))
}

/// Upstream's `fieldpath.FormatMap`: sorted `k="v"` lines joined by `\n`.
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={}", go_quote(v)))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// Go's `%q` for a string: double-quoted with Go escapes for quotes, backslashes and
/// non-printable characters.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("tier".to_string(), "front".to_string()),
                    ("app".to_string(), "web".to_string()),
                ])),
                annotations: Some(BTreeMap::from([(
                    "note".to_string(),
                    "say \"hi\"\n".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("builder".into()),
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([
                            ("cpu".to_string(), q("250m")),
                            ("memory".to_string(), q("64Mi")),
                        ])),
                        requests: Some(BTreeMap::from([("cpu".to_string(), q("1500m"))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.42.0.7".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "10.42.0.7".into(),
                    },
                    PodIP {
                        ip: "fd00::7".into(),
                    },
                ]),
                host_ip: Some("192.168.1.10".into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn field_ref_value_metadata_and_spec_paths_return_pod_fields() {
        let p = pod();
        assert_eq!(field_ref_value(&p, "metadata.name").unwrap(), "web-1");
        assert_eq!(field_ref_value(&p, "metadata.namespace").unwrap(), "prod");
        assert_eq!(field_ref_value(&p, "metadata.uid").unwrap(), "u-1");
        assert_eq!(field_ref_value(&p, "spec.nodeName").unwrap(), "node-a");
        assert_eq!(
            field_ref_value(&p, "spec.serviceAccountName").unwrap(),
            "builder"
        );
    }

    #[test]
    fn field_ref_value_label_maps_format_sorted_quoted_lines() {
        let p = pod();
        assert_eq!(
            field_ref_value(&p, "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"front\""
        );
        assert_eq!(
            field_ref_value(&p, "metadata.annotations").unwrap(),
            "note=\"say \\\"hi\\\"\\n\""
        );
        assert_eq!(
            field_ref_value(&p, "metadata.labels['tier']").unwrap(),
            "front"
        );
        assert_eq!(
            field_ref_value(&p, "metadata.annotations['missing']").unwrap(),
            ""
        );
    }

    #[test]
    fn field_ref_value_status_ips_join_with_commas() {
        let p = pod();
        assert_eq!(field_ref_value(&p, "status.podIP").unwrap(), "10.42.0.7");
        assert_eq!(
            field_ref_value(&p, "status.podIPs").unwrap(),
            "10.42.0.7,fd00::7"
        );
        assert_eq!(
            field_ref_value(&p, "status.hostIP").unwrap(),
            "192.168.1.10"
        );
        assert_eq!(
            field_ref_value(&p, "status.hostIPs").unwrap(),
            "192.168.1.10"
        );
    }

    #[test]
    fn field_ref_value_unknown_path_is_an_error() {
        let err = field_ref_value(&pod(), "spec.containers").unwrap_err();
        assert!(err.to_string().contains("spec.containers"), "{err}");
        assert!(field_ref_value(&pod(), "spec.nodeName['x']").is_err());
    }

    #[test]
    fn resource_field_value_cpu_rounds_up_by_divisor() {
        let p = pod();
        let alloc = BTreeMap::new();
        assert_eq!(
            resource_field_value(&p, "app", "limits.cpu", None, &alloc).unwrap(),
            "1"
        );
        assert_eq!(
            resource_field_value(&p, "app", "limits.cpu", Some(&q("1m")), &alloc).unwrap(),
            "250"
        );
        assert_eq!(
            resource_field_value(&p, "app", "requests.cpu", None, &alloc).unwrap(),
            "2"
        );
    }

    #[test]
    fn resource_field_value_memory_divides_bytes() {
        let p = pod();
        let alloc = BTreeMap::new();
        assert_eq!(
            resource_field_value(&p, "app", "limits.memory", None, &alloc).unwrap(),
            (64 * 1024 * 1024).to_string()
        );
        assert_eq!(
            resource_field_value(&p, "app", "limits.memory", Some(&q("1Mi")), &alloc).unwrap(),
            "64"
        );
        assert_eq!(
            resource_field_value(&p, "app", "limits.memory", Some(&q("1G")), &alloc).unwrap(),
            "1"
        );
    }

    #[test]
    fn resource_field_value_unset_limit_uses_node_allocatable_and_unset_request_is_zero() {
        let p = pod();
        let alloc = BTreeMap::from([("ephemeral-storage".to_string(), q("10Gi"))]);
        assert_eq!(
            resource_field_value(
                &p,
                "app",
                "limits.ephemeral-storage",
                Some(&q("1Gi")),
                &alloc
            )
            .unwrap(),
            "10"
        );
        assert_eq!(
            resource_field_value(&p, "app", "requests.memory", None, &alloc).unwrap(),
            "0"
        );
    }

    #[test]
    fn resource_field_value_unknown_container_or_resource_is_an_error() {
        let alloc = BTreeMap::new();
        assert!(matches!(
            resource_field_value(&pod(), "nope", "limits.cpu", None, &alloc),
            Err(VolumeError::ContainerNotFound(_))
        ));
        assert!(matches!(
            resource_field_value(&pod(), "app", "limits.gpu", None, &alloc),
            Err(VolumeError::UnsupportedResource(_))
        ));
    }
}
