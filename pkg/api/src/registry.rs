//! The resource registry: one description per served resource drives routing, discovery,
//! OpenAPI, tables, field selectors and storage keys.

use serde_json::Value;

/// A subresource of a resource, e.g. `pods/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubresourceInfo {
    pub name: String,
    /// The kind the subresource speaks (`Scale`, `Eviction`, ...), with its group/version.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub verbs: Vec<String>,
}

/// Where a custom resource's scale subresource reads and writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// What the registry knows about a custom resource's served version.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomResourceInfo {
    pub crd_name: String,
    pub schema: Option<Value>,
    pub printer_columns: Vec<Value>,
    pub scale: Option<ScalePaths>,
    pub selectable_fields: Vec<String>,
    pub storage: bool,
}

/// How requests for a resource are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Kept in the store.
    Stored,
    /// Create-only review objects answered on the spot (access reviews, token reviews).
    Review,
    /// Read-only resource usage gathered from the node agents (`metrics.k8s.io`).
    Metrics,
    /// The embedded image registry's repositories and tags (`registry.mini.dev`): listed from
    /// the registry, deleted through it; pushes go through the OCI API under `/v2/`.
    Images,
}

/// Everything the server needs to know about one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    pub subresources: Vec<SubresourceInfo>,
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    pub field_selectors: Vec<String>,
    pub storage: Storage,
    pub custom: Option<CustomResourceInfo>,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group (the name used in error messages).
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn subresource(&self, name: &str) -> Option<&SubresourceInfo> {
        self.subresources.iter().find(|s| s.name == name)
    }

    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    /// Whether an immediate DELETE answers with the deleted object rather than a `Status`
    /// (upstream's `ReturnDeletedObject`: pods, services, service accounts, persistent volumes
    /// and claims, storage classes).
    pub fn returns_deleted_object(&self) -> bool {
        matches!(
            (self.group.as_str(), self.kind.as_str()),
            ("", "Pod")
                | ("", "Service")
                | ("", "ServiceAccount")
                | ("", "PersistentVolume")
                | ("", "PersistentVolumeClaim")
                | ("storage.k8s.io", "StorageClass")
        )
    }

    pub fn supports_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// The store prefix holding every object of this resource (all namespaces).
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store prefix of one namespace (or of the whole resource when cluster-scoped).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }

    /// Whether a field selector label is supported for this resource.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.field_selectors.iter().any(|f| f == field)
    }
}

/// A builder for the built-in table, so each entry reads as one line.
struct Def {
    info: ResourceInfo,
}

fn def(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Def {
    Def {
        info: ResourceInfo {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            short_names: Vec::new(),
            namespaced,
            categories: Vec::new(),
            verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
            subresources: Vec::new(),
            field_selectors: Vec::new(),
            storage: Storage::Stored,
            custom: None,
        },
    }
}

impl Def {
    fn short(mut self, names: &[&str]) -> Self {
        self.info.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }
    fn all(mut self) -> Self {
        self.info.categories.push("all".to_string());
        self
    }
    fn sub(mut self, name: &str, group: &str, version: &str, kind: &str, verbs: &[&str]) -> Self {
        self.info.subresources.push(SubresourceInfo {
            name: name.to_string(),
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        });
        self
    }
    fn status(self) -> Self {
        let (g, v, k) = (
            self.info.group.clone(),
            self.info.version.clone(),
            self.info.kind.clone(),
        );
        self.sub("status", &g, &v, &k, &["get", "patch", "update"])
    }
    fn scale(self) -> Self {
        self.sub(
            "scale",
            "autoscaling",
            "v1",
            "Scale",
            &["get", "patch", "update"],
        )
    }
    fn fields(mut self, fields: &[&str]) -> Self {
        self.info.field_selectors = fields.iter().map(|s| s.to_string()).collect();
        self
    }
    fn review(mut self) -> Self {
        self.info.storage = Storage::Review;
        self.info.verbs = vec!["create".to_string()];
        self
    }
    fn resource_metrics(mut self) -> Self {
        self.info.storage = Storage::Metrics;
        self.info.verbs = vec!["get".to_string(), "list".to_string()];
        self
    }
    fn images(mut self) -> Self {
        self.info.storage = Storage::Images;
        // create/update are the push verbs RBAC grants; the API itself only reads and deletes
        self.info.verbs = ["create", "delete", "get", "list", "update"]
            .iter()
            .map(|v| v.to_string())
            .collect();
        self
    }
    fn verbs(mut self, verbs: &[&str]) -> Self {
        self.info.verbs = verbs.iter().map(|v| v.to_string()).collect();
        self
    }
}

/// Every built-in resource mini serves.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    let pod_fields = [
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ];
    let event_fields = [
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];
    let defs = vec![
        // core/v1
        def("", "v1", "Namespace", "namespaces", false)
            .short(&["ns"])
            .status()
            .sub("finalize", "", "v1", "Namespace", &["update"])
            .fields(&["status.phase"]),
        def("", "v1", "Pod", "pods", true)
            .short(&["po"])
            .all()
            .status()
            .sub("binding", "", "v1", "Binding", &["create"])
            .sub("eviction", "policy", "v1", "Eviction", &["create"])
            .sub("log", "", "v1", "Pod", &["get"])
            .sub("exec", "", "v1", "PodExecOptions", &["create", "get"])
            // mini: a container's filesystem changes as a new image in the registry
            .sub("commit", "", "v1", "Status", &["create"])
            .sub("attach", "", "v1", "PodAttachOptions", &["create", "get"])
            .sub(
                "portforward",
                "",
                "v1",
                "PodPortForwardOptions",
                &["create", "get"],
            )
            .sub(
                "proxy",
                "",
                "v1",
                "PodProxyOptions",
                &["create", "delete", "get", "patch", "update"],
            )
            .fields(&pod_fields),
        def("", "v1", "Binding", "bindings", true).verbs(&["create"]),
        def("", "v1", "Service", "services", true)
            .short(&["svc"])
            .all()
            .status()
            .sub(
                "proxy",
                "",
                "v1",
                "ServiceProxyOptions",
                &["create", "delete", "get", "patch", "update"],
            ),
        def("", "v1", "Endpoints", "endpoints", true).short(&["ep"]),
        def("", "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
        def("", "v1", "Secret", "secrets", true).fields(&["type"]),
        def("", "v1", "ServiceAccount", "serviceaccounts", true)
            .short(&["sa"])
            .sub(
                "token",
                "authentication.k8s.io",
                "v1",
                "TokenRequest",
                &["create"],
            ),
        def("", "v1", "Node", "nodes", false)
            .short(&["no"])
            .status()
            .sub(
                "proxy",
                "",
                "v1",
                "NodeProxyOptions",
                &["create", "delete", "get", "patch", "update"],
            )
            .fields(&["spec.unschedulable"]),
        def("", "v1", "Event", "events", true)
            .short(&["ev"])
            .fields(&event_fields),
        def("", "v1", "PersistentVolume", "persistentvolumes", false)
            .short(&["pv"])
            .status()
            .fields(&["status.phase"]),
        def(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
        )
        .short(&["pvc"])
        .status(),
        def("", "v1", "ResourceQuota", "resourcequotas", true)
            .short(&["quota"])
            .status(),
        def("", "v1", "LimitRange", "limitranges", true).short(&["limits"]),
        def(
            "",
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            true,
        )
        .short(&["rc"])
        .all()
        .status()
        .scale(),
        def("", "v1", "PodTemplate", "podtemplates", true),
        // apps/v1
        def("apps", "v1", "Deployment", "deployments", true)
            .short(&["deploy"])
            .all()
            .status()
            .scale(),
        def("apps", "v1", "ReplicaSet", "replicasets", true)
            .short(&["rs"])
            .all()
            .status()
            .scale()
            .fields(&["status.replicas"]),
        def("apps", "v1", "StatefulSet", "statefulsets", true)
            .short(&["sts"])
            .all()
            .status()
            .scale(),
        def("apps", "v1", "DaemonSet", "daemonsets", true)
            .short(&["ds"])
            .all()
            .status(),
        def(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            true,
        ),
        // batch/v1
        def("batch", "v1", "Job", "jobs", true)
            .all()
            .status()
            .fields(&["status.successful"]),
        def("batch", "v1", "CronJob", "cronjobs", true)
            .short(&["cj"])
            .all()
            .status(),
        // autoscaling/v2
        def(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
        )
        .short(&["hpa"])
        .all()
        .status(),
        // policy/v1
        def(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        )
        .short(&["pdb"])
        .status(),
        // coordination.k8s.io/v1
        def("coordination.k8s.io", "v1", "Lease", "leases", true),
        // metrics.k8s.io: served from the node agents' stats, as metrics-server does
        def("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", false).resource_metrics(),
        def("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", true).resource_metrics(),
        // registry.mini.dev: the embedded image registry's repositories and tags
        def(
            "registry.mini.dev",
            "v1",
            "Repository",
            "repositories",
            true,
        )
        .short(&["repo"])
        .images(),
        def("registry.mini.dev", "v1", "ImageTag", "imagetags", true)
            .short(&["itag"])
            .images(),
        // discovery.k8s.io/v1
        def(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
        ),
        // networking.k8s.io/v1
        def("networking.k8s.io", "v1", "Ingress", "ingresses", true)
            .short(&["ing"])
            .status(),
        def(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            false,
        ),
        def(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        )
        .short(&["netpol"]),
        // rbac.authorization.k8s.io/v1
        def("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        def(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        def(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        def(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        // storage.k8s.io/v1
        def(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            false,
        )
        .short(&["sc"]),
        // events.k8s.io/v1
        def("events.k8s.io", "v1", "Event", "events", true)
            .short(&["ev"])
            .fields(&["regarding.kind", "regarding.name", "reason", "type"]),
        // certificates.k8s.io/v1
        def(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            false,
        )
        .short(&["csr"])
        .status()
        .sub(
            "approval",
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            &["get", "patch", "update"],
        )
        .fields(&["spec.signerName"]),
        // apiregistration.k8s.io/v1: the built-in group-versions as `Local` APIServices;
        // service-backed ones are stored and reported unavailable (mini aggregates nothing)
        def(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
            "apiservices",
            false,
        )
        .status(),
        // apiextensions.k8s.io/v1
        def(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
        .short(&["crd", "crds"])
        .status(),
        // authorization and authentication reviews
        def(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
        )
        .review(),
        def(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
        )
        .review(),
        def(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
        )
        .review(),
        def(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            true,
        )
        .review(),
        def(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
        )
        .review(),
        def(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            false,
        )
        .review(),
    ];
    defs.into_iter().map(|d| d.info).collect()
}

/// The resources of one CRD as the registry serves them (one entry per served version).
pub fn custom_resources_from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let crd_name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut out = Vec::new();
    for version in spec["versions"].as_array().into_iter().flatten() {
        if version["served"].as_bool() == Some(false) {
            continue;
        }
        let Some(vname) = version["name"].as_str() else {
            continue;
        };
        let mut d = def(&group, vname, &kind, &plural, namespaced);
        d.info.singular = singular.clone();
        d.info.short_names = strings(&names["shortNames"]);
        d.info.categories = strings(&names["categories"]);
        let subs = &version["subresources"];
        if subs.get("status").is_some() {
            d = d.status();
        }
        let scale = subs.get("scale").map(|s| ScalePaths {
            spec_replicas: s["specReplicasPath"]
                .as_str()
                .unwrap_or(".spec.replicas")
                .to_string(),
            status_replicas: s["statusReplicasPath"]
                .as_str()
                .unwrap_or(".status.replicas")
                .to_string(),
            label_selector: s["labelSelectorPath"].as_str().map(str::to_string),
        });
        if scale.is_some() {
            d = d.scale();
        }
        let selectable = version["selectableFields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["jsonPath"].as_str())
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        d.info.field_selectors = selectable;
        d.info.custom = Some(CustomResourceInfo {
            crd_name: crd_name.clone(),
            schema: version["schema"].get("openAPIV3Schema").cloned(),
            printer_columns: version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            scale,
            selectable_fields: d.info.field_selectors.clone(),
            storage: version["storage"].as_bool().unwrap_or(false),
        });
        out.push(d.info);
    }
    out
}

/// The registry in force: built-in resources plus those of established CRDs.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    pub fn builtin() -> Self {
        Registry {
            resources: builtin_resources(),
        }
    }

    /// Replaces the custom resources with those of `crds`.
    pub fn with_crds<'a>(&self, crds: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut resources: Vec<ResourceInfo> = self
            .resources
            .iter()
            .filter(|r| r.custom.is_none())
            .cloned()
            .collect();
        for crd in crds {
            resources.extend(custom_resources_from_crd(crd));
        }
        Registry { resources }
    }

    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// The resource served at `/apis/<group>/<version>/<plural>`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The resource for a kind in a group-version.
    pub fn lookup_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// The groups in preferred order (core first as ""), each with its versions.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        for (_, versions) in &mut out {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// The resources of one group-version.
    pub fn group_version(&self, group: &str, version: &str) -> Vec<&ResourceInfo> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }
}

/// Orders Kubernetes versions: GA > beta > alpha, higher numbers first.
pub fn version_priority(version: &str) -> (u8, u32, u32) {
    let rest = version.trim_start_matches('v');
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stability, minor_str) = if let Some(m) = tail.strip_prefix("beta") {
        (1, m)
    } else if let Some(m) = tail.strip_prefix("alpha") {
        (0, m)
    } else if tail.is_empty() {
        (2, "")
    } else {
        (0, "")
    };
    (stability, major, minor_str.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registry_lookup_deployments_has_scale_and_status() {
        let reg = Registry::builtin();
        let d = reg.lookup("apps", "v1", "deployments").unwrap();
        assert!(d.has_status());
        assert_eq!(d.subresource("scale").unwrap().kind, "Scale");
        assert_eq!(d.qualified_plural(), "deployments.apps");
        assert_eq!(
            d.key(Some("ns1"), "web"),
            "/registry/apps/deployments/ns1/web"
        );
    }

    #[test]
    fn registry_with_crds_adds_served_versions_only() {
        let crd = json!({"metadata":{"name":"widgets.example.com"},"spec":{"group":"example.com","scope":"Namespaced",
            "names":{"kind":"Widget","plural":"widgets","shortNames":["wd"]},
            "versions":[{"name":"v1","served":true,"storage":true,"subresources":{"status":{}}},
                        {"name":"v2alpha1","served":false,"storage":false}]}});
        let reg = Registry::builtin().with_crds([&crd]);
        let w = reg.lookup("example.com", "v1", "widgets").unwrap();
        assert!(w.has_status());
        assert_eq!(w.short_names, vec!["wd"]);
        assert!(reg.lookup("example.com", "v2alpha1", "widgets").is_none());
    }

    #[test]
    fn version_priority_orders_ga_beta_alpha() {
        let mut v = vec!["v1alpha1", "v2", "v1beta2", "v1", "v1beta1"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v1beta2", "v1beta1", "v1alpha1"]);
    }

    #[test]
    fn pods_field_selectors_include_node_name() {
        let reg = Registry::builtin();
        let p = reg.lookup("", "v1", "pods").unwrap();
        assert!(p.supports_field("spec.nodeName"));
        assert!(p.supports_field("metadata.namespace"));
        assert!(!p.supports_field("spec.bogus"));
    }
}
