//! Pure translations from a Pod spec to CRI configs: the sandbox config (hostname, DNS, port
//! mappings, namespaces, labels) and a container's Linux resources and security context.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, PodDNSConfig};
use mini_cri::proto;

use crate::KubeletConfig;

/// Upstream's CRI labels: the metrics code and restart adoption map CRI objects back to pods
/// through them.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Marks sandboxes and containers this kubelet manages (upstream's `io.kubernetes.docker.type`
/// has a similar role).
pub const LABEL_MANAGED: &str = "io.mini.kubelet.managed";
/// Container annotation keeping the pod's grace period and the termination message path.
pub const ANNOTATION_TERMINATION_MESSAGE_PATH: &str =
    "io.kubernetes.container.terminationMessagePath";
pub const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";

/// Upstream's default masked and read-only paths for unprivileged containers.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub(crate) fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}
pub(crate) fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}
pub(crate) fn pod_namespace(pod: &Pod) -> String {
    pod.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The labels every CRI object of `pod` carries.
pub(crate) fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(LABEL_POD_NAME.into(), pod_name(pod));
    labels.insert(LABEL_POD_NAMESPACE.into(), pod_namespace(pod));
    labels.insert(LABEL_POD_UID.into(), pod_uid(pod));
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels
}

/// The pod's hostname as upstream: `spec.hostname` or the pod name, cut to 63 characters
/// without a trailing `-`/`.`; the node's hostname with host networking.
pub(crate) fn hostname(pod: &Pod, node_hostname: &str) -> String {
    if host_network(pod) {
        return node_hostname.to_string();
    }
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_name(pod));
    let mut cut: String = name.chars().take(63).collect();
    while cut.ends_with('-') || cut.ends_with('.') {
        cut.pop();
    }
    cut
}

/// A parsed resolv.conf: nameservers, search domains, options.
pub(crate) fn parse_resolv_conf(text: &str) -> proto::DnsConfig {
    let mut dns = proto::DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => dns.servers.extend(fields.next().map(str::to_string)),
            Some("search") | Some("domain") => {
                dns.searches = fields.map(str::to_string).collect();
            }
            Some("options") => dns.options.extend(fields.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

/// The sandbox DNS config for the pod's dnsPolicy (ClusterFirst, ClusterFirstWithHostNet,
/// Default, None) merged with its dnsConfig, as upstream's `GetPodDNS`.
pub(crate) fn dns_config(pod: &Pod, config: &KubeletConfig, host_resolv: &str) -> proto::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network(pod),
        _ => false,
    } && !config.cluster_dns.is_empty();
    let mut dns = if policy == "None" {
        proto::DnsConfig::default()
    } else if cluster_first {
        let ns = pod_namespace(pod);
        let domain = &config.cluster_domain;
        let mut searches = vec![
            format!("{ns}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ];
        // Upstream appends the host's search domains after the cluster ones.
        for s in parse_resolv_conf(host_resolv).searches {
            if !searches.contains(&s) {
                searches.push(s);
            }
        }
        proto::DnsConfig {
            servers: config.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
            searches,
            options: vec!["ndots:5".into()],
        }
    } else {
        parse_resolv_conf(host_resolv)
    };
    if let Some(extra) = spec.dns_config.as_ref() {
        merge_dns_config(&mut dns, extra);
    }
    dns
}

fn merge_dns_config(dns: &mut proto::DnsConfig, extra: &PodDNSConfig) {
    for server in extra.nameservers.iter().flatten() {
        if !dns.servers.contains(server) {
            dns.servers.push(server.clone());
        }
    }
    for search in extra.searches.iter().flatten() {
        if !dns.searches.contains(search) {
            dns.searches.push(search.clone());
        }
    }
    for option in extra.options.iter().flatten() {
        let rendered = match &option.value {
            Some(v) => format!("{}:{v}", option.name.clone().unwrap_or_default()),
            None => option.name.clone().unwrap_or_default(),
        };
        let name = option.name.clone().unwrap_or_default();
        dns.options
            .retain(|o| o.split(':').next().unwrap_or("") != name.as_str());
        dns.options.push(rendered);
    }
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => proto::Protocol::Udp as i32,
        Some("SCTP") => proto::Protocol::Sctp as i32,
        _ => proto::Protocol::Tcp as i32,
    }
}

fn namespace_options(pod: &Pod) -> proto::NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |on: Option<bool>| {
        if on.unwrap_or(false) {
            proto::NamespaceMode::Node as i32
        } else {
            proto::NamespaceMode::Pod as i32
        }
    };
    proto::NamespaceOption {
        network: mode(spec.host_network),
        pid: if spec.host_pid.unwrap_or(false) {
            proto::NamespaceMode::Node as i32
        } else if spec.share_process_namespace.unwrap_or(false) {
            proto::NamespaceMode::Pod as i32
        } else {
            proto::NamespaceMode::Container as i32
        },
        ipc: mode(spec.host_ipc),
        ..Default::default()
    }
}

/// The full sandbox config of `pod` for sandbox `attempt`.
pub(crate) fn sandbox_config(
    pod: &Pod,
    config: &KubeletConfig,
    node_hostname: &str,
    host_resolv: &str,
    attempt: u32,
) -> proto::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut port_mappings = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            if let Some(host_port) = p.host_port.filter(|h| *h > 0) {
                port_mappings.push(proto::PortMapping {
                    protocol: protocol(p.protocol.as_deref()),
                    container_port: p.container_port,
                    host_port,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let psc = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    let log_directory = mini_logs::pod_log_dir(
        &config.logs_dir,
        &pod_namespace(pod),
        &pod_name(pod),
        &pod_uid(pod),
    );
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: pod_name(pod),
            uid: pod_uid(pod),
            namespace: pod_namespace(pod),
            attempt,
        }),
        hostname: hostname(pod, node_hostname),
        log_directory: log_directory.to_string_lossy().into_owned(),
        dns_config: Some(dns_config(pod, config, host_resolv)),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(proto::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(proto::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: psc.run_as_user.map(|value| proto::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| proto::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Kubernetes quantity (`100m`, `64Mi`, `1.5`, `2e3`) as a number of base units.
pub(crate) fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

fn resource(container: &Container, limits: bool, name: &str) -> Option<f64> {
    let r = container.resources.as_ref()?;
    let map = if limits { &r.limits } else { &r.requests };
    map.as_ref()?.get(name).and_then(|q| parse_quantity(&q.0))
}

const CPU_PERIOD: i64 = 100_000;

/// Container resources as upstream's `generateLinuxContainerResources`: shares from the CPU
/// request (minimum 2), quota from the CPU limit over a 100 ms period, memory limit in bytes.
pub(crate) fn linux_resources(container: &Container) -> proto::LinuxContainerResources {
    let cpu_request = resource(container, false, "cpu");
    let cpu_limit = resource(container, true, "cpu");
    // The API server defaults requests to limits; do the same when a request is missing.
    let request_milli = cpu_request
        .or(cpu_limit)
        .map(|c| (c * 1000.0).ceil() as i64);
    let cpu_shares = match request_milli {
        Some(m) => (m * 1024 / 1000).max(2),
        None => 2,
    };
    let mut res = proto::LinuxContainerResources {
        cpu_shares,
        ..Default::default()
    };
    if let Some(limit) = cpu_limit {
        let milli = (limit * 1000.0).ceil() as i64;
        res.cpu_period = CPU_PERIOD;
        res.cpu_quota = (milli * CPU_PERIOD / 1000).max(1000);
    }
    if let Some(memory) = resource(container, true, "memory") {
        res.memory_limit_in_bytes = memory as i64;
    }
    res
}

/// The container's Linux security context: the container's settings over the pod's.
pub(crate) fn linux_security_context(
    pod: &Pod,
    container: &Container,
) -> proto::LinuxContainerSecurityContext {
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let csc = container.security_context.clone().unwrap_or_default();
    let privileged = csc.privileged.unwrap_or(false);
    let caps = csc.capabilities.clone().unwrap_or_default();
    proto::LinuxContainerSecurityContext {
        capabilities: Some(proto::Capability {
            add_capabilities: caps.add.clone().unwrap_or_default(),
            drop_capabilities: caps.drop.clone().unwrap_or_default(),
            ..Default::default()
        }),
        privileged,
        namespace_options: Some(namespace_options(pod)),
        run_as_user: csc
            .run_as_user
            .or(psc.run_as_user)
            .map(|value| proto::Int64Value { value }),
        run_as_group: csc
            .run_as_group
            .or(psc.run_as_group)
            .map(|value| proto::Int64Value { value }),
        supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
        readonly_rootfs: csc.read_only_root_filesystem.unwrap_or(false),
        no_new_privs: csc.allow_privilege_escalation == Some(false),
        masked_paths: if privileged {
            Vec::new()
        } else {
            MASKED_PATHS.iter().map(|p| p.to_string()).collect()
        },
        readonly_paths: if privileged {
            Vec::new()
        } else {
            READONLY_PATHS.iter().map(|p| p.to_string()).collect()
        },
        ..Default::default()
    }
}

/// Whether runAsNonRoot is violated by an explicit uid 0 (the image's user is not checked).
pub(crate) fn run_as_non_root_violation(pod: &Pod, container: &Container) -> Option<String> {
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let csc = container.security_context.clone().unwrap_or_default();
    let non_root = csc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false);
    let uid = csc.run_as_user.or(psc.run_as_user);
    (non_root && uid == Some(0)).then(|| {
        format!(
            "container {:?} has runAsNonRoot and runAsUser 0 (will not run as root)",
            container.name
        )
    })
}

/// Reads the host resolv.conf, empty when unreadable (the pod then gets no DNS servers).
pub(crate) fn read_resolv_conf(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read resolv.conf for pod dns");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "prod", "uid": "u1", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .expect("test pod")
    }

    fn config() -> KubeletConfig {
        KubeletConfig {
            node_name: "n1".into(),
            node_ip: "10.0.0.5".parse().expect("ip"),
            pods_dir: "/pods".into(),
            logs_dir: "/logs".into(),
            cluster_dns: vec!["10.43.0.10".parse::<IpAddr>().expect("ip")],
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            pinned_ip_dir: None,
        }
    }

    const HOST_RESOLV: &str = "nameserver 1.1.1.1\nsearch corp.example\noptions edns0\n";

    #[test]
    fn dns_config_cluster_first_uses_cluster_dns_and_search_path() {
        let p = pod(serde_json::json!({"containers": []}));
        let dns = dns_config(&p, &config(), HOST_RESOLV);
        assert_eq!(dns.servers, vec!["10.43.0.10"]);
        assert_eq!(
            dns.searches,
            vec![
                "prod.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(dns.options, vec!["ndots:5"]);
    }

    #[test]
    fn dns_config_host_network_cluster_first_falls_back_to_host() {
        let p = pod(serde_json::json!({"containers": [], "hostNetwork": true}));
        let dns = dns_config(&p, &config(), HOST_RESOLV);
        assert_eq!(dns.servers, vec!["1.1.1.1"]);
        assert_eq!(dns.options, vec!["edns0"]);
    }

    #[test]
    fn dns_config_none_policy_takes_pod_dns_config_only() {
        let p = pod(serde_json::json!({"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["9.9.9.9"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}]}}));
        let dns = dns_config(&p, &config(), HOST_RESOLV);
        assert_eq!(dns.servers, vec!["9.9.9.9"]);
        assert_eq!(dns.searches, vec!["a.b"]);
        assert_eq!(dns.options, vec!["ndots:2"]);
    }

    #[test]
    fn dns_config_merge_overrides_option_by_name() {
        let p = pod(serde_json::json!({"containers": [],
            "dnsConfig": {"options": [{"name": "ndots", "value": "1"}, {"name": "rotate"}]}}));
        let dns = dns_config(&p, &config(), HOST_RESOLV);
        assert_eq!(dns.options, vec!["ndots:1", "rotate"]);
    }

    #[test]
    fn sandbox_config_carries_hostports_labels_and_host_network_mode() {
        let p = pod(
            serde_json::json!({"hostNetwork": true, "containers": [{"name": "a", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]}]}),
        );
        let c = sandbox_config(&p, &config(), "node-host", HOST_RESOLV, 2);
        assert_eq!(c.port_mappings.len(), 1);
        assert_eq!(c.port_mappings[0].host_port, 8080);
        assert_eq!(c.hostname, "node-host");
        assert_eq!(c.labels[LABEL_POD_UID], "u1");
        assert_eq!(c.labels[LABEL_POD_NAME], "web");
        assert_eq!(c.labels[LABEL_POD_NAMESPACE], "prod");
        assert_eq!(c.labels["app"], "web");
        assert_eq!(c.log_directory, "/logs/prod_web_u1");
        assert_eq!(c.metadata.as_ref().map(|m| m.attempt), Some(2));
        let linux = c.linux.expect("linux config");
        assert_eq!(linux.cgroup_parent, "");
        let ns = linux
            .security_context
            .and_then(|s| s.namespace_options)
            .expect("namespace options");
        assert_eq!(ns.network, proto::NamespaceMode::Node as i32);
    }

    #[test]
    fn hostname_prefers_spec_hostname_and_cuts_to_63() {
        let p = pod(serde_json::json!({"containers": [], "hostname": "h1"}));
        assert_eq!(hostname(&p, "n"), "h1");
        let long = format!("{}-x", "a".repeat(62));
        let p = pod(serde_json::json!({"containers": [], "hostname": long}));
        assert_eq!(hostname(&p, "n"), "a".repeat(62));
    }

    #[test]
    fn parse_quantity_handles_suffixes() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn linux_resources_maps_requests_and_limits() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "a",
            "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "128Mi"}}}))
        .expect("container");
        let r = linux_resources(&c);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        let none: Container = serde_json::from_value(serde_json::json!({"name": "a"})).expect("c");
        let r = linux_resources(&none);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (2, 0, 0)
        );
    }

    #[test]
    fn security_context_container_overrides_pod() {
        let p = pod(
            serde_json::json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 3000},
            "containers": []}),
        );
        let c: Container =
            serde_json::from_value(serde_json::json!({"name": "a", "securityContext": {
            "runAsUser": 2000, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}))
            .expect("container");
        let s = linux_security_context(&p, &c);
        assert_eq!(s.run_as_user.map(|v| v.value), Some(2000));
        assert_eq!(s.run_as_group.map(|v| v.value), Some(3000));
        assert!(s.readonly_rootfs);
        assert!(s.no_new_privs);
        let caps = s.capabilities.expect("caps");
        assert_eq!(caps.add_capabilities, vec!["NET_ADMIN"]);
        assert_eq!(caps.drop_capabilities, vec!["ALL"]);
        assert!(!s.masked_paths.is_empty());
    }
}
