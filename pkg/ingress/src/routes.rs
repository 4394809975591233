//! The route table: mini-class Ingresses, their Services and EndpointSlices turned into
//! host and path rules with resolved backends (ready endpoint addresses, round robin).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

/// `spec.controller` of the IngressClasses mini serves.
pub const CONTROLLER: &str = "mini.dev/ingress";
/// Marks the cluster's default IngressClass (for Ingresses without a class).
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The class annotation that predates `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The EndpointSlice label naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The IngressClasses whose controller is mini's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MiniClasses {
    pub names: BTreeSet<String>,
    /// Whether one of them is the default class (Ingresses without a class are ours).
    pub default: bool,
}

impl MiniClasses {
    pub fn from_classes<'a>(classes: impl IntoIterator<Item = &'a IngressClass>) -> MiniClasses {
        let mut out = MiniClasses::default();
        for class in classes {
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller != Some(CONTROLLER) {
                continue;
            }
            let Some(name) = class.metadata.name.clone() else {
                continue;
            };
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            out.default |= is_default;
            out.names.insert(name);
        }
        out
    }

    /// Whether mini serves this class at all (the proxy listens only then).
    pub fn active(&self) -> bool {
        !self.names.is_empty()
    }

    /// Whether `ingress` is for mini: its class is one of ours, or it names none and ours is
    /// the default.
    pub fn serves(&self, ingress: &Ingress) -> bool {
        let class = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                    .map(String::as_str)
            });
        match class {
            Some(name) => self.names.contains(name),
            None => self.default,
        }
    }
}

/// Where requests for one Service port go: its ready endpoints, taken in turn.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs and error pages.
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Backend {
        Backend {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint (round robin); `None` when the Service has no ready endpoint.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[i % self.endpoints.len()])
    }
}

/// How a path rule matches (`ImplementationSpecific` is treated as `Prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Exact,
    Prefix,
}

#[derive(Debug)]
struct PathRule {
    kind: PathKind,
    /// For `Prefix`, without its trailing slash (so `/` is the empty string).
    path: String,
    backend: Arc<Backend>,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == self.path,
            PathKind::Prefix => {
                path == self.path
                    || (path.starts_with(&self.path)
                        && path.as_bytes().get(self.path.len()) == Some(&b'/'))
            }
        }
    }

    /// Longest path first; for equal paths `Exact` before `Prefix`.
    fn order_key(&self) -> (std::cmp::Reverse<usize>, bool) {
        (
            std::cmp::Reverse(self.path.len()),
            self.kind == PathKind::Prefix,
        )
    }
}

#[derive(Debug, Default)]
struct HostRules {
    paths: Vec<PathRule>,
}

impl HostRules {
    fn find(&self, path: &str) -> Option<&Arc<Backend>> {
        self.paths
            .iter()
            .find(|r| r.matches(path))
            .map(|r| &r.backend)
    }

    fn sort(&mut self) {
        // stable: among equal keys the older Ingress wins
        self.paths.sort_by_key(PathRule::order_key);
    }
}

/// A TLS entry of a served Ingress: the Secret holding the certificate and the hosts it is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TlsRef {
    pub namespace: String,
    pub secret: String,
    /// Lowercase; may hold wildcards (`*.example.com`).
    pub hosts: Vec<String>,
}

/// Every rule of every served Ingress, ready for lookups.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact_hosts: HashMap<String, HostRules>,
    /// `*.example.com` rules, keyed by `example.com`.
    wildcard_hosts: HashMap<String, HostRules>,
    any_host: HostRules,
    default_backend: Option<Arc<Backend>>,
    pub tls: Vec<TlsRef>,
    /// `namespace/name` of the served Ingresses.
    pub ingresses: Vec<String>,
}

impl RouteTable {
    /// The backend for a request to `host` (lowercase, no port) and `path`: the host's own rules,
    /// then wildcard rules, then rules without a host, then a default backend; `None` is a 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let path = if path.is_empty() { "/" } else { path };
        if let Some(b) = self.exact_hosts.get(host).and_then(|r| r.find(path)) {
            return Some(b);
        }
        if let Some((_, parent)) = host.split_once('.') {
            if let Some(b) = self.wildcard_hosts.get(parent).and_then(|r| r.find(path)) {
                return Some(b);
            }
        }
        self.any_host.find(path).or(self.default_backend.as_ref())
    }

    /// Builds the table from the watched objects; only Ingresses `classes` serves count.
    pub fn build(
        classes: &MiniClasses,
        ingresses: &[Arc<Ingress>],
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> RouteTable {
        let mut resolver = Resolver::new(services, slices);
        let mut served: Vec<&Ingress> = ingresses
            .iter()
            .map(Arc::as_ref)
            .filter(|i| classes.serves(i))
            .collect();
        // the oldest Ingress wins conflicts, as in other controllers
        served.sort_by(|a, b| {
            let key = |i: &Ingress| {
                (
                    i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    i.metadata.namespace.clone().unwrap_or_default(),
                    i.metadata.name.clone().unwrap_or_default(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut table = RouteTable::default();
        for ingress in served {
            let ns = ingress.metadata.namespace.as_deref().unwrap_or("default");
            table.ingresses.push(format!(
                "{ns}/{}",
                ingress.metadata.name.as_deref().unwrap_or_default()
            ));
            let Some(spec) = &ingress.spec else { continue };
            if table.default_backend.is_none() {
                if let Some(b) = &spec.default_backend {
                    table.default_backend = Some(resolver.backend(ns, b));
                }
            }
            let mut rule_hosts = Vec::new();
            for rule in spec.rules.iter().flatten() {
                let host = rule
                    .host
                    .as_deref()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if !host.is_empty() {
                    rule_hosts.push(host.clone());
                }
                let rules = if host.is_empty() {
                    &mut table.any_host
                } else if let Some(parent) = host.strip_prefix("*.") {
                    table.wildcard_hosts.entry(parent.to_string()).or_default()
                } else {
                    table.exact_hosts.entry(host).or_default()
                };
                for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                    let kind = if p.path_type == "Exact" {
                        PathKind::Exact
                    } else {
                        PathKind::Prefix
                    };
                    let mut path = p.path.clone().unwrap_or_else(|| "/".into());
                    if kind == PathKind::Prefix {
                        while path.ends_with('/') {
                            path.pop();
                        }
                    }
                    rules.paths.push(PathRule {
                        kind,
                        path,
                        backend: resolver.backend(ns, &p.backend),
                    });
                }
            }
            for tls in spec.tls.iter().flatten() {
                let Some(secret) = tls.secret_name.clone().filter(|s| !s.is_empty()) else {
                    continue;
                };
                let hosts = match tls.hosts.as_deref() {
                    Some(h) if !h.is_empty() => h.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    _ => rule_hosts.clone(),
                };
                table.tls.push(TlsRef {
                    namespace: ns.to_string(),
                    secret,
                    hosts,
                });
            }
        }
        table.any_host.sort();
        for rules in table.exact_hosts.values_mut() {
            rules.sort();
        }
        for rules in table.wildcard_hosts.values_mut() {
            rules.sort();
        }
        table
    }

    /// The Secrets the TLS entries name (`(namespace, name)`), each once.
    pub fn tls_secrets(&self) -> BTreeSet<(String, String)> {
        self.tls
            .iter()
            .map(|t| (t.namespace.clone(), t.secret.clone()))
            .collect()
    }
}

/// Resolves Ingress backends to endpoint addresses, sharing one [`Backend`] (and so one round
/// robin) per Service port.
struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    made: HashMap<String, Arc<Backend>>,
}

impl<'a> Resolver<'a> {
    fn new(services: &'a [Arc<Service>], slices: &'a [Arc<EndpointSlice>]) -> Self {
        let services = services
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    s.as_ref(),
                ))
            })
            .collect();
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            by_service
                .entry((ns, svc.as_str()))
                .or_default()
                .push(slice);
        }
        Resolver {
            services,
            slices: by_service,
            made: HashMap::new(),
        }
    }

    fn backend(&mut self, ns: &str, backend: &IngressBackend) -> Arc<Backend> {
        let Some(svc_ref) = &backend.service else {
            // resource backends are not served
            return Arc::new(Backend::new(format!("{ns}/<resource backend>"), Vec::new()));
        };
        let port = svc_ref.port.as_ref();
        let port_text = port
            .and_then(|p| p.name.clone())
            .or_else(|| port.and_then(|p| p.number).map(|n| n.to_string()))
            .unwrap_or_default();
        let name = format!("{ns}/{}:{port_text}", svc_ref.name);
        if let Some(b) = self.made.get(&name) {
            return b.clone();
        }
        let endpoints = self.endpoints(ns, &svc_ref.name, port);
        let b = Arc::new(Backend::new(name.clone(), endpoints));
        self.made.insert(name, b.clone());
        b
    }

    fn endpoints(
        &self,
        ns: &str,
        service: &str,
        port: Option<&k8s_openapi::api::networking::v1::ServiceBackendPort>,
    ) -> Vec<SocketAddr> {
        let Some(svc) = self.services.get(&(ns, service)) else {
            return Vec::new();
        };
        let Some(spec) = &svc.spec else {
            return Vec::new();
        };
        let Some(svc_port) = spec.ports.iter().flatten().find(|p| match port {
            Some(want) => match (&want.name, want.number) {
                (Some(name), _) if !name.is_empty() => p.name.as_deref() == Some(name),
                (_, Some(number)) => p.port == number,
                _ => false,
            },
            None => true,
        }) else {
            return Vec::new();
        };
        let port_name = svc_port.name.as_deref().unwrap_or_default();
        let mut out = BTreeSet::new();
        for slice in self.slices.get(&(ns, service)).into_iter().flatten() {
            let Some(target) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready {
                    continue;
                }
                for address in &ep.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        out.insert(SocketAddr::new(ip, target));
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {DEFAULT_CLASS_ANNOTATION: default.to_string()}},
            "spec": {"controller": controller}
        }))
        .expect("class")
    }

    fn mini() -> MiniClasses {
        MiniClasses::from_classes(&[class("mini", CONTROLLER, true)])
    }

    fn service(name: &str, port_name: &str, port: i32) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"name": port_name, "port": port}]}
            }))
            .expect("service"),
        )
    }

    fn slice(
        service: &str,
        port_name: &str,
        port: i32,
        ips: &[(&str, bool)],
    ) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{service}-x"), "namespace": "default",
                             "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
                "ports": [{"name": port_name, "port": port}],
                "endpoints": ips.iter().map(|(ip, ready)| json!({
                    "addresses": [ip], "conditions": {"ready": ready}
                })).collect::<Vec<_>>()
            }))
            .expect("slice"),
        )
    }

    fn ingress(name: &str, spec: serde_json::Value) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec
            }))
            .expect("ingress"),
        )
    }

    fn backend(svc: &str) -> serde_json::Value {
        json!({"service": {"name": svc, "port": {"number": 80}}})
    }

    fn path(p: &str, kind: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": kind, "backend": backend(svc)})
    }

    /// Services a..e on port 80, each with one ready endpoint 10.42.0.<n>:8080.
    fn world() -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
        let names = ["a", "b", "c", "d", "e"];
        let services = names.iter().map(|n| service(n, "http", 80)).collect();
        let slices = names
            .iter()
            .enumerate()
            .map(|(i, n)| slice(n, "http", 8080, &[(&format!("10.42.0.{}", i + 1), true)]))
            .collect();
        (services, slices)
    }

    fn routed(table: &RouteTable, host: &str, path: &str) -> Option<String> {
        table.route(host, path).map(|b| {
            b.name
                .split(['/', ':'])
                .nth(1)
                .unwrap_or_default()
                .to_string()
        })
    }

    #[test]
    fn route_exact_beats_prefix_and_longest_prefix_wins() {
        let (services, slices) = world();
        let ing = ingress(
            "i",
            json!({"rules": [{"host": "example.com", "http": {"paths": [
                path("/", "Prefix", "a"),
                path("/api", "Prefix", "b"),
                path("/api/v2/", "Prefix", "c"),
                path("/api", "Exact", "d"),
                path("/x", "ImplementationSpecific", "e"),
            ]}}]}),
        );
        let t = RouteTable::build(&mini(), &[ing], &services, &slices);
        assert_eq!(routed(&t, "example.com", "/api").as_deref(), Some("d"));
        assert_eq!(routed(&t, "example.com", "/api/").as_deref(), Some("b"));
        assert_eq!(routed(&t, "example.com", "/api/v1").as_deref(), Some("b"));
        assert_eq!(routed(&t, "example.com", "/api/v2").as_deref(), Some("c"));
        assert_eq!(routed(&t, "example.com", "/api/v2/z").as_deref(), Some("c"));
        assert_eq!(routed(&t, "example.com", "/apix").as_deref(), Some("a"));
        assert_eq!(routed(&t, "example.com", "/x/y").as_deref(), Some("e"));
        assert_eq!(routed(&t, "example.com", "").as_deref(), Some("a"));
        assert_eq!(routed(&t, "other.com", "/"), None);
    }

    #[test]
    fn route_wildcard_host_matches_one_label_only() {
        let (services, slices) = world();
        let ing = ingress(
            "i",
            json!({"rules": [
                {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "a")]}},
                {"host": "www.example.com", "http": {"paths": [path("/", "Prefix", "b")]}},
            ]}),
        );
        let t = RouteTable::build(&mini(), &[ing], &services, &slices);
        assert_eq!(routed(&t, "foo.example.com", "/").as_deref(), Some("a"));
        assert_eq!(routed(&t, "www.example.com", "/").as_deref(), Some("b"));
        assert_eq!(routed(&t, "example.com", "/"), None);
        assert_eq!(routed(&t, "a.b.example.com", "/"), None);
    }

    #[test]
    fn route_default_backend_catches_unmatched_hosts_and_paths() {
        let (services, slices) = world();
        let ing = ingress(
            "i",
            json!({"defaultBackend": backend("e"), "rules": [
                {"host": "example.com", "http": {"paths": [path("/only", "Exact", "a")]}},
            ]}),
        );
        let t = RouteTable::build(&mini(), &[ing], &services, &slices);
        assert_eq!(routed(&t, "example.com", "/only").as_deref(), Some("a"));
        assert_eq!(routed(&t, "example.com", "/other").as_deref(), Some("e"));
        assert_eq!(routed(&t, "unknown.org", "/").as_deref(), Some("e"));
    }

    #[test]
    fn route_rules_without_host_serve_every_host() {
        let (services, slices) = world();
        let ing = ingress(
            "i",
            json!({"rules": [{"http": {"paths": [path("/", "Prefix", "c")]}}]}),
        );
        let t = RouteTable::build(&mini(), &[ing], &services, &slices);
        assert_eq!(routed(&t, "anything", "/z").as_deref(), Some("c"));
    }

    #[test]
    fn build_skips_ingresses_of_other_classes() {
        let (services, slices) = world();
        let classes = MiniClasses::from_classes(&[
            class("mini", CONTROLLER, false),
            class("nginx", "k8s.io/ingress-nginx", true),
        ]);
        let rules = json!([{"http": {"paths": [path("/", "Prefix", "a")]}}]);
        let ours = ingress("ours", json!({"ingressClassName": "mini", "rules": rules}));
        let theirs = ingress(
            "theirs",
            json!({"ingressClassName": "nginx", "rules": rules}),
        );
        let unclassed = ingress("unclassed", json!({"rules": rules}));
        let t = RouteTable::build(&classes, &[ours, theirs, unclassed], &services, &slices);
        assert_eq!(t.ingresses, vec!["default/ours".to_string()]);
        assert!(classes.active());
        assert!(!MiniClasses::from_classes(&[class("nginx", "x", true)]).active());
    }

    #[test]
    fn backend_endpoints_are_ready_ones_by_port_name_or_number_round_robin() {
        let services = vec![service("web", "http", 80)];
        let slices = vec![slice(
            "web",
            "http",
            8080,
            &[
                ("10.42.0.1", true),
                ("10.42.0.2", false),
                ("10.42.1.3", true),
            ],
        )];
        let by_name = ingress(
            "i",
            json!({"defaultBackend": {"service": {"name": "web", "port": {"name": "http"}}}}),
        );
        let t = RouteTable::build(&mini(), &[by_name], &services, &slices);
        let b = t.route("x", "/").expect("backend");
        assert_eq!(
            b.endpoints,
            vec![
                "10.42.0.1:8080".parse().expect("addr"),
                "10.42.1.3:8080".parse().expect("addr")
            ]
        );
        let picks: Vec<_> = (0..3).map(|_| b.pick().expect("pick")).collect();
        assert_eq!(picks[0], picks[2]);
        assert_ne!(picks[0], picks[1]);
        let wrong_port = ingress(
            "i",
            json!({"defaultBackend": {"service": {"name": "web", "port": {"number": 81}}}}),
        );
        let t = RouteTable::build(&mini(), &[wrong_port], &services, &slices);
        assert_eq!(t.route("x", "/").expect("backend").pick(), None);
        let missing = ingress("i", json!({"defaultBackend": backend("nope")}));
        let t = RouteTable::build(&mini(), &[missing], &services, &slices);
        assert_eq!(t.route("x", "/").expect("backend").pick(), None);
    }

    #[test]
    fn tls_entries_default_to_the_rule_hosts() {
        let (services, slices) = world();
        let ing = ingress(
            "i",
            json!({"tls": [{"secretName": "s1"}, {"secretName": "s2", "hosts": ["B.example.com"]}],
                   "rules": [{"host": "a.example.com", "http": {"paths": [path("/", "Prefix", "a")]}}]}),
        );
        let t = RouteTable::build(&mini(), &[ing], &services, &slices);
        assert_eq!(t.tls[0].hosts, vec!["a.example.com".to_string()]);
        assert_eq!(t.tls[1].hosts, vec!["b.example.com".to_string()]);
        assert_eq!(t.tls_secrets().len(), 2);
    }
}
