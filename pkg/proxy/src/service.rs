//! What the proxy needs from Services and EndpointSlices: one `ServicePort` per (Service,
//! port) with its VIPs, node port, policies and the endpoints to balance over (ready ones, or
//! serving-and-terminating ones as a fallback, as upstream kube-proxy does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// From a Kubernetes `protocol` field (absent means TCP).
    pub fn parse(protocol: Option<&str>) -> Option<Proto> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// The nftables name (`inet_proto` value).
    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Whether the endpoint runs on this node (for `externalTrafficPolicy: Local`).
    pub local: bool,
}

/// One port of one Service, everything the ruleset needs about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name, or its number when it has none.
    pub port_name: String,
    pub proto: Proto,
    pub port: u16,
    pub cluster_ip: Ipv4Addr,
    pub node_port: Option<u16>,
    /// `status.loadBalancer.ingress[].ip` and `spec.externalIPs`: answered like the ClusterIP,
    /// with the external traffic policy.
    pub external_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`: NodePort/LoadBalancer traffic only to this node's
    /// endpoints.
    pub external_local: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Endpoints for cluster traffic.
    pub endpoints: Vec<Endpoint>,
    /// This node's endpoints for external traffic under the Local policy.
    pub local_endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `namespace/name/proto/port-name`: unique per Service port, used in chain names.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.proto.nft(),
            self.port_name
        )
    }

    /// Whether traffic may reach it from outside the cluster network (NodePort, LB, external IP).
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// Upstream's label that hands a Service to another proxy.
const SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream default ClientIP affinity timeout (3 h).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

#[derive(Debug, Clone)]
struct SliceEndpoint {
    ip: Ipv4Addr,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<String>,
}

/// Every programmable Service port, sorted by key. Services without a ClusterIP (headless),
/// ExternalName Services and non-IPv4 addresses are left out: there is nothing to program.
pub fn service_ports(
    services: &[std::sync::Arc<Service>],
    slices: &[std::sync::Arc<EndpointSlice>],
    node_name: &str,
) -> Vec<ServicePort> {
    // (namespace, service) -> slices
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(slice);
    }
    let mut out = Vec::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        if svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME))
        {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue; // headless ("None"), unset, or IPv6
        };
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        external_ips.extend(
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref())
                .filter_map(|ip| ip.parse::<Ipv4Addr>().ok()),
        );
        external_ips.sort();
        external_ips.dedup();
        let is_external_type = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let external_local =
            is_external_type && spec.external_traffic_policy.as_deref() == Some("Local");
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let svc_slices = by_service
            .get(&(ns.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for port in spec.ports.iter().flatten() {
            let Some(proto) = Proto::parse(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(port_number) = u16::try_from(port.port) else {
                continue;
            };
            let port_name = port.name.clone().unwrap_or_default();
            let candidates = slice_endpoints(svc_slices, &port_name, proto);
            let endpoints = usable(&candidates, |_| true);
            let local_endpoints = usable(&candidates, |e| e.node.as_deref() == Some(node_name));
            let to_endpoint = |(e, p): &(SliceEndpoint, u16)| Endpoint {
                ip: e.ip,
                port: *p,
                local: e.node.as_deref() == Some(node_name),
            };
            out.push(ServicePort {
                namespace: ns.clone(),
                name: name.clone(),
                port_name: if port_name.is_empty() {
                    port_number.to_string()
                } else {
                    port_name.clone()
                },
                proto,
                port: port_number,
                cluster_ip,
                node_port: if is_external_type {
                    port.node_port.and_then(|p| u16::try_from(p).ok())
                } else {
                    None
                },
                external_ips: external_ips.clone(),
                external_local,
                affinity_timeout,
                endpoints: endpoints.iter().map(to_endpoint).collect(),
                local_endpoints: local_endpoints.iter().map(to_endpoint).collect(),
            });
        }
    }
    out.sort_by_key(|p| p.key());
    out
}

/// The endpoints of the slices' port matching `port_name`/`proto`, with their target port,
/// deduplicated by address.
fn slice_endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: Proto,
) -> Vec<(SliceEndpoint, u16)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for slice in slices {
        let Some(target) = slice.ports.iter().flatten().find_map(|p| {
            let name_matches = p.name.as_deref().unwrap_or("") == port_name;
            let proto_matches = Proto::parse(p.protocol.as_deref()) == Some(proto);
            (name_matches && proto_matches)
                .then_some(p.port)
                .flatten()
                .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for ep in &slice.endpoints {
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            for address in &ep.addresses {
                let Ok(IpAddr::V4(ip)) = address.parse::<IpAddr>() else {
                    continue;
                };
                if !seen.insert((ip, target)) {
                    continue;
                }
                out.push((
                    SliceEndpoint {
                        ip,
                        ready,
                        serving,
                        terminating,
                        node: ep.node_name.clone(),
                    },
                    target,
                ));
            }
        }
    }
    out
}

/// The ready endpoints that pass `filter`, or, when there are none, the serving and
/// terminating ones (upstream's fallback so connections drain during a rollout).
fn usable(
    candidates: &[(SliceEndpoint, u16)],
    filter: impl Fn(&SliceEndpoint) -> bool,
) -> Vec<(SliceEndpoint, u16)> {
    let mut ready: Vec<_> = candidates
        .iter()
        .filter(|(e, _)| filter(e) && e.ready)
        .cloned()
        .collect();
    if ready.is_empty() {
        ready = candidates
            .iter()
            .filter(|(e, _)| filter(e) && e.serving && e.terminating)
            .cloned()
            .collect();
    }
    ready.sort_by_key(|(e, p)| (e.ip, *p));
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn svc(json: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(json).expect("service json"))
    }

    fn slice(json: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(json).expect("slice json"))
    }

    #[test]
    fn service_ports_ready_endpoints_and_terminating_fallback() {
        let services = vec![svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.5", "type": "NodePort", "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        }))];
        let slices = vec![slice(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.42.1.5"], "nodeName": "n2", "conditions": {"ready": false}},
                {"addresses": ["10.42.0.6"], "nodeName": "n1",
                 "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }))];
        let ports = service_ports(&services, &slices, "n2");
        assert_eq!(ports.len(), 1);
        let p = &ports[0];
        assert_eq!(p.key(), "default/web/tcp/http");
        assert_eq!(p.node_port, Some(30080));
        assert!(p.external_local);
        assert_eq!(
            p.endpoints,
            vec![Endpoint {
                ip: "10.42.0.5".parse().expect("ip"),
                port: 8080,
                local: false
            }]
        );
        // n2's only endpoint is not ready and not terminating: no local endpoints.
        assert!(p.local_endpoints.is_empty());
        let on_n1 = service_ports(&services, &slices, "n1");
        assert_eq!(on_n1[0].local_endpoints.len(), 1);
    }

    #[test]
    fn service_ports_headless_and_external_name_are_skipped() {
        let services = vec![
            svc(
                serde_json::json!({"metadata": {"name": "h", "namespace": "a"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            ),
            svc(
                serde_json::json!({"metadata": {"name": "x", "namespace": "a"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}}),
            ),
        ];
        assert!(service_ports(&services, &[], "n1").is_empty());
    }
}
