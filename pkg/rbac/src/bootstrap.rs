//! The bootstrap ClusterRoles and ClusterRoleBindings, after upstream's
//! `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::resolver::cluster_role_rules;

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const READ_UPDATE: &[&str] = &["get", "list", "watch", "update", "patch"];

const LEGACY: &str = "";
const APPS: &str = "apps";
const AUTHENTICATION: &str = "authentication.k8s.io";
const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTOSCALING: &str = "autoscaling";
const BATCH: &str = "batch";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
const EXTENSIONS: &str = "extensions";
const POLICY: &str = "policy";
const RBAC: &str = "rbac.authorization.k8s.io";
const STORAGE: &str = "storage.k8s.io";
const NETWORKING: &str = "networking.k8s.io";
const EVENTS: &str = "events.k8s.io";
const NODE: &str = "node.k8s.io";
/// mini's embedded image registry (`repositories`: pull = get, push = create/update).
const MINI_REGISTRY: &str = "registry.mini.dev";
/// mini's load tests (`loadtests`: view reads them and their results, edit starts, cancels
/// and deletes them).
const MINI_LOADTEST: &str = "loadtest.mini.dev";

const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// Builds a PolicyRule like upstream's `rbacv1helpers.NewRule(...)...RuleOrDie()`, which
/// sorts every list.
#[derive(Default)]
struct RuleBuilder {
    verbs: Vec<&'static str>,
    groups: Vec<&'static str>,
    resources: Vec<&'static str>,
    names: Vec<&'static str>,
    urls: Vec<&'static str>,
}

fn rule(verbs: &[&'static str]) -> RuleBuilder {
    RuleBuilder {
        verbs: verbs.to_vec(),
        ..RuleBuilder::default()
    }
}

impl RuleBuilder {
    fn groups(mut self, groups: &[&'static str]) -> Self {
        self.groups.extend_from_slice(groups);
        self
    }

    fn resources(mut self, resources: &[&'static str]) -> Self {
        self.resources.extend_from_slice(resources);
        self
    }

    fn names(mut self, names: &[&'static str]) -> Self {
        self.names.extend_from_slice(names);
        self
    }

    fn urls(mut self, urls: &[&'static str]) -> Self {
        self.urls.extend_from_slice(urls);
        self
    }

    fn build(self) -> Value {
        fn sorted(mut items: Vec<&'static str>) -> Value {
            items.sort_unstable();
            json!(items)
        }
        let mut out = Map::new();
        out.insert("verbs".into(), sorted(self.verbs));
        let optional = [
            ("apiGroups", self.groups),
            ("resources", self.resources),
            ("resourceNames", self.names),
            ("nonResourceURLs", self.urls),
        ];
        for (key, items) in optional {
            if !items.is_empty() {
                out.insert(key.into(), sorted(items));
            }
        }
        Value::Object(out)
    }
}

/// create/update/patch of events in both event API groups.
fn events_rule() -> Value {
    rule(&["create", "update", "patch"])
        .groups(&[LEGACY, EVENTS])
        .resources(&["events"])
        .build()
}

fn default_metadata(name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels: BTreeMap<&str, &str> = BTreeMap::new();
    labels.insert("kubernetes.io/bootstrapping", "rbac-defaults");
    labels.extend(extra_labels.iter().copied());
    json!({
        "name": name,
        "labels": labels,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    labelled_cluster_role(name, &[], rules)
}

fn labelled_cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": default_metadata(name, labels),
        "rules": rules,
    })
}

/// A ClusterRole aggregating every ClusterRole labelled `aggregate_label: "true"`; its
/// rules are filled in once all bootstrap roles exist.
fn aggregated_cluster_role(name: &str, labels: &[(&str, &str)], aggregate_label: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": default_metadata(name, labels),
        "aggregationRule": {
            "clusterRoleSelectors": [{"matchLabels": {aggregate_label: "true"}}],
        },
        "rules": [],
    })
}

/// What a kubelet needs (upstream's `NodeRules()` with its default feature gates), plus
/// what mini's agent needs for its service proxy and DNS server. The Node authorizer grants
/// these to every node (secrets, configmaps, claims, volumes and tokens only through the
/// graph of the node's pods); the `system:node` ClusterRoleBinding has no subjects.
pub fn node_rules() -> Vec<Value> {
    vec![
        // Pulling every image from the embedded registry, and pushing the image tarballs
        // dropped into the node's image directory so every other node can pull them.
        rule(&["get", "create", "update"])
            .groups(&[MINI_REGISTRY])
            .resources(&["repositories"])
            .build(),
        // Checking API access; these creates are non-mutating.
        rule(&["create"])
            .groups(&[AUTHENTICATION])
            .resources(&["tokenreviews"])
            .build(),
        rule(&["create"])
            .groups(&[AUTHORIZATION])
            .resources(&["subjectaccessreviews", "localsubjectaccessreviews"])
            .build(),
        // Services for pod env vars; mini's agent also proxies services and serves DNS
        // from services, endpoints and endpointslices.
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["services", "endpoints"])
            .build(),
        rule(READ)
            .groups(&[DISCOVERY])
            .resources(&["endpointslices"])
            .build(),
        // mini's agent enforces NetworkPolicies (pods and namespaces are its peers).
        rule(READ)
            .groups(&[NETWORKING])
            .resources(&["networkpolicies"])
            .build(),
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["namespaces"])
            .build(),
        // mini's agent is the ingress controller (its TLS Secrets are read with get).
        rule(READ)
            .groups(&[NETWORKING])
            .resources(&["ingresses", "ingressclasses"])
            .build(),
        // Registering the Node object and reporting status.
        rule(&["create", "get", "list", "watch"])
            .groups(&[LEGACY])
            .resources(&["nodes"])
            .build(),
        rule(&["update", "patch"])
            .groups(&[LEGACY])
            .resources(&["nodes/status"])
            .build(),
        rule(&["update", "patch"])
            .groups(&[LEGACY])
            .resources(&["nodes"])
            .build(),
        events_rule(),
        rule(READ).groups(&[LEGACY]).resources(&["pods"]).build(),
        // Mirror pods.
        rule(&["create", "delete"])
            .groups(&[LEGACY])
            .resources(&["pods"])
            .build(),
        rule(&["update", "patch"])
            .groups(&[LEGACY])
            .resources(&["pods/status"])
            .build(),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["pods/eviction"])
            .build(),
        // mini: snapshotting a container into a new image (`mini commit`).
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["pods/commit"])
            .build(),
        // Secret and configmap volumes, image pull secrets, env.
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["secrets", "configmaps"])
            .build(),
        rule(&["get"])
            .groups(&[LEGACY])
            .resources(&["persistentvolumeclaims", "persistentvolumes"])
            .build(),
        rule(&["create", "get", "list", "watch"])
            .groups(&[CERTIFICATES])
            .resources(&["certificatesigningrequests"])
            .build(),
        rule(&["get", "create", "update", "patch", "delete"])
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .build(),
        rule(&["get"])
            .groups(&[STORAGE])
            .resources(&["volumeattachments"])
            .build(),
        rule(&["get", "update", "patch"])
            .groups(&[LEGACY])
            .resources(&["persistentvolumeclaims/status"])
            .build(),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["serviceaccounts/token"])
            .build(),
        rule(&["get", "watch", "list"])
            .groups(&[STORAGE])
            .resources(&["csidrivers"])
            .build(),
        rule(&["get", "create", "update", "patch", "delete"])
            .groups(&[STORAGE])
            .resources(&["csinodes"])
            .build(),
        rule(READ)
            .groups(&[NODE])
            .resources(&["runtimeclasses"])
            .build(),
        // Static pod IPs: /32 routes for the pool addresses held on other nodes.
        rule(READ)
            .groups(&["mini.dev"])
            .resources(&["ipallocations", "ippools"])
            .build(),
    ]
}

fn aggregate_to_admin_rules() -> Vec<Value> {
    vec![
        rule(&["create"])
            .groups(&[AUTHORIZATION])
            .resources(&["localsubjectaccessreviews"])
            .build(),
        rule(READ_WRITE)
            .groups(&[RBAC])
            .resources(&["roles", "rolebindings"])
            .build(),
    ]
}

fn aggregate_to_edit_rules() -> Vec<Value> {
    vec![
        // Pushing and deleting images in the namespace's repositories.
        rule(&["create", "update", "delete", "deletecollection", "patch"])
            .groups(&[MINI_REGISTRY])
            .resources(&["repositories", "imagetags"])
            .build(),
        rule(&["create", "update", "delete", "deletecollection", "patch"])
            .groups(&[MINI_LOADTEST])
            .resources(&["loadtests"])
            .build(),
        // Read on escalating resources.
        rule(READ)
            .groups(&[LEGACY])
            .resources(&[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ])
            .build(),
        rule(&["impersonate"])
            .groups(&[LEGACY])
            .resources(&["serviceaccounts"])
            .build(),
        rule(WRITE)
            .groups(&[LEGACY])
            .resources(&[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ])
            .build(),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["pods/eviction"])
            .build(),
        rule(WRITE)
            .groups(&[LEGACY])
            .resources(&[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ])
            .build(),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["serviceaccounts/token"])
            .build(),
        rule(WRITE)
            .groups(&[APPS])
            .resources(&[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ])
            .build(),
        rule(WRITE)
            .groups(&[AUTOSCALING])
            .resources(&["horizontalpodautoscalers"])
            .build(),
        rule(WRITE)
            .groups(&[BATCH])
            .resources(&["jobs", "cronjobs"])
            .build(),
        rule(WRITE)
            .groups(&[EXTENSIONS])
            .resources(&[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "ingresses",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
                "networkpolicies",
            ])
            .build(),
        rule(WRITE)
            .groups(&[POLICY])
            .resources(&["poddisruptionbudgets"])
            .build(),
        rule(WRITE)
            .groups(&[NETWORKING])
            .resources(&["networkpolicies", "ingresses"])
            .build(),
        rule(READ_WRITE)
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .build(),
    ]
}

fn aggregate_to_view_rules() -> Vec<Value> {
    vec![
        // Pulling images from the namespace's repositories.
        rule(READ)
            .groups(&[MINI_REGISTRY])
            .resources(&["repositories", "imagetags"])
            .build(),
        rule(READ)
            .groups(&[MINI_LOADTEST])
            .resources(&["loadtests"])
            .build(),
        rule(READ)
            .groups(&[LEGACY])
            .resources(&[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ])
            .build(),
        rule(READ)
            .groups(&[LEGACY])
            .resources(&[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ])
            .build(),
        // Reading namespaces at namespace scope means reading *this* namespace.
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["namespaces"])
            .build(),
        rule(READ)
            .groups(&[DISCOVERY])
            .resources(&["endpointslices"])
            .build(),
        rule(READ)
            .groups(&[APPS])
            .resources(&[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ])
            .build(),
        rule(READ)
            .groups(&[AUTOSCALING])
            .resources(&[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ])
            .build(),
        rule(READ)
            .groups(&[BATCH])
            .resources(&["jobs", "cronjobs", "cronjobs/status", "jobs/status"])
            .build(),
        rule(READ)
            .groups(&[EXTENSIONS])
            .resources(&[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
                "networkpolicies",
            ])
            .build(),
        rule(READ)
            .groups(&[POLICY])
            .resources(&["poddisruptionbudgets", "poddisruptionbudgets/status"])
            .build(),
        rule(READ)
            .groups(&[NETWORKING])
            .resources(&["networkpolicies", "ingresses", "ingresses/status"])
            .build(),
    ]
}

fn kube_scheduler_rules() -> Vec<Value> {
    vec![
        events_rule(),
        // Leader election.
        rule(&["create"])
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .build(),
        rule(&["get", "update"])
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .names(&["kube-scheduler"])
            .build(),
        rule(READ).groups(&[LEGACY]).resources(&["nodes"]).build(),
        rule(&["get", "list", "watch", "delete"])
            .groups(&[LEGACY])
            .resources(&["pods"])
            .build(),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["pods/binding", "bindings"])
            .build(),
        rule(&["patch", "update"])
            .groups(&[LEGACY])
            .resources(&["pods/status"])
            .build(),
        // Things that select pods.
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["services", "replicationcontrollers"])
            .build(),
        rule(READ)
            .groups(&[APPS, EXTENSIONS])
            .resources(&["replicasets"])
            .build(),
        rule(READ)
            .groups(&[APPS])
            .resources(&["statefulsets"])
            .build(),
        // Things pods use or that apply to them.
        rule(READ)
            .groups(&[POLICY])
            .resources(&["poddisruptionbudgets"])
            .build(),
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["persistentvolumeclaims", "persistentvolumes"])
            .build(),
        rule(&["create"])
            .groups(&[AUTHENTICATION])
            .resources(&["tokenreviews"])
            .build(),
        rule(&["create"])
            .groups(&[AUTHORIZATION])
            .resources(&["subjectaccessreviews"])
            .build(),
        rule(READ)
            .groups(&[STORAGE])
            .resources(&["csinodes"])
            .build(),
        // Static pod IPs: the pools' node selectors.
        rule(READ)
            .groups(&["mini.dev"])
            .resources(&["ippools"])
            .build(),
        rule(READ)
            .groups(&[LEGACY])
            .resources(&["namespaces"])
            .build(),
        rule(READ)
            .groups(&[STORAGE])
            .resources(&["csidrivers"])
            .build(),
        rule(READ)
            .groups(&[STORAGE])
            .resources(&["csistoragecapacities"])
            .build(),
    ]
}

fn kube_controller_manager_rules() -> Vec<Value> {
    vec![
        events_rule(),
        // Leader election.
        rule(&["create"])
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .build(),
        rule(&["get", "update"])
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .names(&["kube-controller-manager"])
            .build(),
        // Fundamental resources.
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["secrets", "serviceaccounts"])
            .build(),
        rule(&["delete"])
            .groups(&[LEGACY])
            .resources(&["secrets"])
            .build(),
        rule(&["get"])
            .groups(&[LEGACY])
            .resources(&["namespaces", "secrets", "serviceaccounts", "configmaps"])
            .build(),
        rule(&["update"])
            .groups(&[LEGACY])
            .resources(&["secrets", "serviceaccounts"])
            .build(),
        // Checking API access; these creates are non-mutating.
        rule(&["create"])
            .groups(&[AUTHENTICATION])
            .resources(&["tokenreviews"])
            .build(),
        rule(&["create"])
            .groups(&[AUTHORIZATION])
            .resources(&["subjectaccessreviews"])
            .build(),
        // All shared informers.
        rule(&["list", "watch"])
            .groups(&["*"])
            .resources(&["*"])
            .build(),
        rule(&["create"])
            .groups(&[LEGACY])
            .resources(&["serviceaccounts/token"])
            .build(),
    ]
}

fn signer_approver(name: &str, signer: &'static str) -> Value {
    cluster_role(
        name,
        vec![rule(&["approve"])
            .groups(&[CERTIFICATES])
            .resources(&["signers"])
            .names(&[signer])
            .build()],
    )
}

/// The bootstrap ClusterRoles (cluster-admin, admin, edit, view, system:discovery,
/// system:basic-user, system:public-info-viewer, system:node, system:kube-scheduler,
/// system:kube-controller-manager, ...), as JSON objects with apiVersion and kind.
///
/// Every role carries the `kubernetes.io/bootstrapping: rbac-defaults` label and the
/// `rbac.authorization.kubernetes.io/autoupdate: "true"` annotation. `admin`, `edit` and
/// `view` have upstream's aggregationRule and their `rules` already hold the aggregated
/// result, as upstream's aggregation controller would have written it.
pub fn bootstrap_cluster_roles() -> Vec<Value> {
    let mut roles = vec![
        // A "root" role which can do absolutely anything.
        cluster_role(
            "cluster-admin",
            vec![
                rule(&["*"]).groups(&["*"]).resources(&["*"]).build(),
                rule(&["*"]).urls(&["*"]).build(),
            ],
        ),
        // Enough to tell whether the server is ready and to discover API versions.
        cluster_role(
            "system:discovery",
            vec![rule(&["get"])
                .urls(&[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ])
                .build()],
        ),
        // Reading health and metrics endpoints.
        cluster_role(
            "system:monitoring",
            vec![rule(&["get"])
                .urls(&[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ])
                .build()],
        ),
        // Minimal access letting a "normal" user learn about themselves.
        cluster_role(
            "system:basic-user",
            vec![
                rule(&["create"])
                    .groups(&[AUTHORIZATION])
                    .resources(&["selfsubjectaccessreviews", "selfsubjectrulesreviews"])
                    .build(),
                rule(&["create"])
                    .groups(&[AUTHENTICATION])
                    .resources(&["selfsubjectreviews"])
                    .build(),
            ],
        ),
        // Insensitive cluster information, readable even unauthenticated.
        cluster_role(
            "system:public-info-viewer",
            vec![rule(&["get"])
                .urls(&["/livez", "/readyz", "/healthz", "/version", "/version/"])
                .build()],
        ),
        // Namespace admin: edit plus granting permissions.
        aggregated_cluster_role("admin", &[], AGGREGATE_TO_ADMIN),
        // Namespace editor: all user-level actions, no privileged resources.
        aggregated_cluster_role("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        // Namespace viewer: read-only on non-escalating resources.
        aggregated_cluster_role("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        labelled_cluster_role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            aggregate_to_admin_rules(),
        ),
        labelled_cluster_role(
            "system:aggregate-to-edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            aggregate_to_edit_rules(),
        ),
        labelled_cluster_role(
            "system:aggregate-to-view",
            &[(AGGREGATE_TO_VIEW, "true")],
            aggregate_to_view_rules(),
        ),
        cluster_role(
            "system:heapster",
            vec![
                rule(READ)
                    .groups(&[LEGACY])
                    .resources(&["events", "pods", "nodes", "namespaces"])
                    .build(),
                rule(READ)
                    .groups(&[EXTENSIONS])
                    .resources(&["deployments"])
                    .build(),
            ],
        ),
        cluster_role("system:node", node_rules()),
        cluster_role(
            "system:node-problem-detector",
            vec![
                rule(&["get"])
                    .groups(&[LEGACY])
                    .resources(&["nodes"])
                    .build(),
                rule(&["patch"])
                    .groups(&[LEGACY])
                    .resources(&["nodes/status"])
                    .build(),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:kubelet-api-admin",
            vec![
                rule(READ).groups(&[LEGACY]).resources(&["nodes"]).build(),
                rule(&["proxy"])
                    .groups(&[LEGACY])
                    .resources(&["nodes"])
                    .build(),
                rule(&["*"])
                    .groups(&[LEGACY])
                    .resources(&[
                        "nodes/proxy",
                        "nodes/metrics",
                        "nodes/spec",
                        "nodes/stats",
                        "nodes/log",
                    ])
                    .build(),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(&["create", "get", "list", "watch"])
                .groups(&[CERTIFICATES])
                .resources(&["certificatesigningrequests"])
                .build()],
        ),
        // Authentication and authorization delegation.
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"])
                    .groups(&[AUTHENTICATION])
                    .resources(&["tokenreviews"])
                    .build(),
                rule(&["create"])
                    .groups(&[AUTHORIZATION])
                    .resources(&["subjectaccessreviews"])
                    .build(),
            ],
        ),
        cluster_role(
            "system:kube-aggregator",
            vec![rule(READ)
                .groups(&[LEGACY])
                .resources(&["services", "endpoints"])
                .build()],
        ),
        cluster_role(
            "system:kube-controller-manager",
            kube_controller_manager_rules(),
        ),
        cluster_role(
            "system:kube-dns",
            vec![rule(&["list", "watch"])
                .groups(&[LEGACY])
                .resources(&["endpoints", "services"])
                .build()],
        ),
        cluster_role(
            "system:persistent-volume-provisioner",
            vec![
                rule(&["get", "list", "watch", "create", "delete"])
                    .groups(&[LEGACY])
                    .resources(&["persistentvolumes"])
                    .build(),
                rule(&["get", "list", "watch", "update"])
                    .groups(&[LEGACY])
                    .resources(&["persistentvolumeclaims"])
                    .build(),
                rule(READ)
                    .groups(&[STORAGE])
                    .resources(&["storageclasses"])
                    .build(),
                rule(&["watch"])
                    .groups(&[LEGACY])
                    .resources(&["events"])
                    .build(),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(&["create"])
                .groups(&[CERTIFICATES])
                .resources(&["certificatesigningrequests/nodeclient"])
                .build()],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(&["create"])
                .groups(&[CERTIFICATES])
                .resources(&["certificatesigningrequests/selfnodeclient"])
                .build()],
        ),
        cluster_role(
            "system:volume-scheduler",
            vec![
                rule(READ_UPDATE)
                    .groups(&[LEGACY])
                    .resources(&["persistentvolumes"])
                    .build(),
                rule(READ)
                    .groups(&[STORAGE])
                    .resources(&["storageclasses"])
                    .build(),
                rule(READ_UPDATE)
                    .groups(&[LEGACY])
                    .resources(&["persistentvolumeclaims"])
                    .build(),
            ],
        ),
        signer_approver(
            "system:certificates.k8s.io:legacy-unknown-approver",
            "kubernetes.io/legacy-unknown",
        ),
        signer_approver(
            "system:certificates.k8s.io:kubelet-serving-approver",
            "kubernetes.io/kubelet-serving",
        ),
        signer_approver(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            "kubernetes.io/kube-apiserver-client",
        ),
        signer_approver(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        // Reading the ServiceAccount issuer discovery documents.
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![rule(&["get"])
                .urls(&["/.well-known/openid-configuration", "/openid/v1/jwks"])
                .build()],
        ),
        // Used by kube-proxy (and mini's agent, which proxies services).
        cluster_role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"])
                    .groups(&[LEGACY])
                    .resources(&["services", "endpoints"])
                    .build(),
                rule(READ).groups(&[LEGACY]).resources(&["nodes"]).build(),
                events_rule(),
                rule(&["list", "watch"])
                    .groups(&[DISCOVERY])
                    .resources(&["endpointslices"])
                    .build(),
            ],
        ),
        cluster_role("system:kube-scheduler", kube_scheduler_rules()),
    ];

    // Fill in the aggregated roles' rules, as upstream's aggregation controller does.
    let aggregated: Vec<(usize, Vec<Value>)> = roles
        .iter()
        .enumerate()
        .filter(|(_, role)| role.get("aggregationRule").is_some())
        .map(|(i, role)| {
            let rules = cluster_role_rules(&roles, role)
                .iter()
                .map(crate::rule::PolicyRule::to_json)
                .collect();
            (i, rules)
        })
        .collect();
    for (i, rules) in aggregated {
        roles[i]["rules"] = Value::Array(rules);
    }
    roles
}

fn group(name: &str) -> Value {
    json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

fn user(name: &str) -> Value {
    json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

fn service_account(namespace: &str, name: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": namespace})
}

fn cluster_role_binding(role: &str, subjects: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": default_metadata(role, &[]),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// The bootstrap ClusterRoleBindings (cluster-admin → system:masters, system:discovery →
/// system:authenticated, system:node → system:nodes, ...), each named after its role.
pub fn bootstrap_cluster_role_bindings() -> Vec<Value> {
    vec![
        cluster_role_binding("cluster-admin", vec![group("system:masters")]),
        cluster_role_binding("system:monitoring", vec![group("system:monitoring")]),
        cluster_role_binding("system:discovery", vec![group("system:authenticated")]),
        cluster_role_binding("system:basic-user", vec![group("system:authenticated")]),
        cluster_role_binding(
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        // Upstream binds only the kube-proxy user; mini's agents (group system:nodes) run
        // the service proxy themselves.
        cluster_role_binding(
            "system:node-proxier",
            vec![user("system:kube-proxy"), group("system:nodes")],
        ),
        cluster_role_binding(
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        cluster_role_binding(
            "system:kube-dns",
            vec![service_account("kube-system", "kube-dns")],
        ),
        cluster_role_binding("system:kube-scheduler", vec![user("system:kube-scheduler")]),
        cluster_role_binding(
            "system:volume-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        // As upstream: no subjects. Nodes get the role's rules from the Node authorizer
        // (mini-nodeauthz), which limits secrets, configmaps, claims, volumes and tokens to
        // what the node's pods use; NodeRestriction admission limits their writes.
        cluster_role_binding("system:node", vec![]),
        cluster_role_binding(
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
    ]
}
