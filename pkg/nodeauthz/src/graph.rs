//! The node graph: which secrets, configmaps, claims, volumes and service accounts each node
//! reaches through the pods bound to it, kept as reference counts so a lookup is a few hash
//! probes (upstream's node authorizer graph, flattened).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// What a node may reach through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    ServiceAccount,
    ResourceClaim,
}

/// A namespaced object: (namespace, name).
pub type ObjKey = (String, String);

/// The references of one bound pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub node: String,
    pub refs: BTreeSet<(Kind, String)>,
}

/// The ingress controller's view of one Ingress: its class and its TLS secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressRefs {
    pub class: Option<String>,
    pub tls_secrets: BTreeSet<String>,
}

/// An IngressClass: whether mini's controller serves it and whether it is the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassInfo {
    pub mini: bool,
    pub default: bool,
}

/// The controller name of mini's ingress proxy.
pub const MINI_INGRESS_CONTROLLER: &str = "mini.dev/ingress";

/// The whole index. Lookups are read-only; the feed applies changes one object at a time.
#[derive(Debug, Default)]
pub struct Graph {
    pods: HashMap<ObjKey, PodRefs>,
    /// (node, kind, namespace, name) -> how many of the node's pods reference it.
    edges: HashMap<(String, Kind, String, String), u32>,
    /// PVC -> the PV it is bound to (`spec.volumeName`).
    claim_volume: HashMap<ObjKey, String>,
    /// PV -> the claims bound to it.
    volume_claims: HashMap<String, BTreeSet<ObjKey>>,
    /// PV -> the secrets it references.
    volume_secrets: HashMap<String, BTreeSet<ObjKey>>,
    /// secret -> the PVs that reference it.
    secret_volumes: HashMap<ObjKey, BTreeSet<String>>,
    ingresses: HashMap<ObjKey, IngressRefs>,
    /// TLS secret -> the ingresses naming it.
    tls_ingresses: HashMap<ObjKey, BTreeSet<String>>,
    classes: HashMap<String, ClassInfo>,
}

fn key_of(obj: &Value) -> ObjKey {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

fn name_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// Volume plugins whose secret is named by `secretRef.name` (pod volumes and PVs alike).
const SECRET_REF_PLUGINS: &[&str] = &[
    "cephfs",
    "cinder",
    "flexVolume",
    "iscsi",
    "rbd",
    "scaleIO",
    "storageos",
];

/// The references a pod makes (volumes incl. projected, env and envFrom of every container
/// kind, image pull secrets, its service account, claims and resource claims), and the
/// node it is bound to; `None` for a pod not bound to a node yet.
pub fn pod_refs(pod: &Value) -> Option<PodRefs> {
    let spec = &pod["spec"];
    let node = name_at(spec, &["nodeName"])?.to_string();
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let mut refs = BTreeSet::new();
    let mut add = |kind: Kind, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            refs.insert((kind, n.to_string()));
        }
    };
    add(
        Kind::ServiceAccount,
        name_at(spec, &["serviceAccountName"]).or_else(|| name_at(spec, &["serviceAccount"])),
    );
    for s in array(spec, "imagePullSecrets") {
        add(Kind::Secret, name_at(s, &["name"]));
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in array(spec, list) {
            for e in array(c, "envFrom") {
                add(Kind::Secret, name_at(e, &["secretRef", "name"]));
                add(Kind::ConfigMap, name_at(e, &["configMapRef", "name"]));
            }
            for e in array(c, "env") {
                add(
                    Kind::Secret,
                    name_at(e, &["valueFrom", "secretKeyRef", "name"]),
                );
                add(
                    Kind::ConfigMap,
                    name_at(e, &["valueFrom", "configMapKeyRef", "name"]),
                );
            }
        }
    }
    for v in array(spec, "volumes") {
        add(Kind::Secret, name_at(v, &["secret", "secretName"]));
        add(Kind::Secret, name_at(v, &["azureFile", "secretName"]));
        add(
            Kind::Secret,
            name_at(v, &["csi", "nodePublishSecretRef", "name"]),
        );
        for plugin in SECRET_REF_PLUGINS {
            add(Kind::Secret, name_at(v, &[plugin, "secretRef", "name"]));
        }
        add(Kind::ConfigMap, name_at(v, &["configMap", "name"]));
        for s in array(&v["projected"], "sources") {
            add(Kind::Secret, name_at(s, &["secret", "name"]));
            add(Kind::ConfigMap, name_at(s, &["configMap", "name"]));
        }
        add(
            Kind::PersistentVolumeClaim,
            name_at(v, &["persistentVolumeClaim", "claimName"]),
        );
        // a generic ephemeral volume's claim is named `<pod>-<volume>`
        if v.get("ephemeral").is_some_and(Value::is_object) {
            if let Some(vol) = name_at(v, &["name"]) {
                add(
                    Kind::PersistentVolumeClaim,
                    Some(&format!("{pod_name}-{vol}")),
                );
            }
        }
    }
    for c in array(spec, "resourceClaims") {
        add(Kind::ResourceClaim, name_at(c, &["resourceClaimName"]));
    }
    for c in array(&pod["status"], "resourceClaimStatuses") {
        add(Kind::ResourceClaim, name_at(c, &["resourceClaimName"]));
    }
    Some(PodRefs { node, refs })
}

/// The secrets a PersistentVolume references, each with its namespace (a reference
/// without one lives in the namespace of the PV's claim).
pub fn volume_secret_refs(pv: &Value) -> BTreeSet<ObjKey> {
    let spec = &pv["spec"];
    let claim_ns = name_at(spec, &["claimRef", "namespace"]).unwrap_or("default");
    let mut out = BTreeSet::new();
    let mut add = |r: &Value| {
        if let Some(name) = name_at(r, &["name"]) {
            let ns = name_at(r, &["namespace"]).unwrap_or(claim_ns);
            out.insert((ns.to_string(), name.to_string()));
        }
    };
    for plugin in SECRET_REF_PLUGINS {
        add(&spec[*plugin]["secretRef"]);
    }
    for r in [
        "nodePublishSecretRef",
        "nodeStageSecretRef",
        "controllerPublishSecretRef",
        "controllerExpandSecretRef",
        "nodeExpandSecretRef",
    ] {
        add(&spec["csi"][r]);
    }
    if let Some(name) = name_at(spec, &["azureFile", "secretName"]) {
        let ns = name_at(spec, &["azureFile", "secretNamespace"]).unwrap_or(claim_ns);
        out.insert((ns.to_string(), name.to_string()));
    }
    out
}

/// An Ingress's class (`spec.ingressClassName`, else the legacy annotation) and TLS secrets.
pub fn ingress_refs(ingress: &Value) -> IngressRefs {
    let class = name_at(&ingress["spec"], &["ingressClassName"])
        .or_else(|| {
            ingress["metadata"]["annotations"]["kubernetes.io/ingress.class"]
                .as_str()
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string);
    let tls_secrets = array(&ingress["spec"], "tls")
        .filter_map(|t| name_at(t, &["secretName"]))
        .map(str::to_string)
        .collect();
    IngressRefs { class, tls_secrets }
}

/// Whether mini's controller serves an IngressClass, and whether it is the default class.
pub fn class_info(class: &Value) -> ClassInfo {
    ClassInfo {
        mini: class["spec"]["controller"].as_str() == Some(MINI_INGRESS_CONTROLLER),
        default: class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    }
}

impl Graph {
    /// A pod was created or changed (or, with `None`, deleted).
    pub fn set_pod(&mut self, key: ObjKey, pod: Option<&Value>) {
        let new = pod.and_then(pod_refs);
        if let Some(old) = self.pods.remove(&key) {
            for (kind, name) in &old.refs {
                let edge = (old.node.clone(), *kind, key.0.clone(), name.clone());
                if let Some(n) = self.edges.get_mut(&edge) {
                    *n -= 1;
                    if *n == 0 {
                        self.edges.remove(&edge);
                    }
                }
            }
        }
        if let Some(new) = new {
            for (kind, name) in &new.refs {
                *self
                    .edges
                    .entry((new.node.clone(), *kind, key.0.clone(), name.clone()))
                    .or_default() += 1;
            }
            self.pods.insert(key, new);
        }
    }

    /// A PVC was created or changed (or, with `None`, deleted).
    pub fn set_claim(&mut self, key: ObjKey, pvc: Option<&Value>) {
        if let Some(old) = self.claim_volume.remove(&key) {
            if let Some(claims) = self.volume_claims.get_mut(&old) {
                claims.remove(&key);
                if claims.is_empty() {
                    self.volume_claims.remove(&old);
                }
            }
        }
        if let Some(pv) = pvc.and_then(|c| name_at(&c["spec"], &["volumeName"])) {
            self.volume_claims
                .entry(pv.to_string())
                .or_default()
                .insert(key.clone());
            self.claim_volume.insert(key, pv.to_string());
        }
    }

    /// A PV was created or changed (or, with `None`, deleted).
    pub fn set_volume(&mut self, name: &str, pv: Option<&Value>) {
        if let Some(old) = self.volume_secrets.remove(name) {
            for secret in old {
                if let Some(pvs) = self.secret_volumes.get_mut(&secret) {
                    pvs.remove(name);
                    if pvs.is_empty() {
                        self.secret_volumes.remove(&secret);
                    }
                }
            }
        }
        let secrets = pv.map(volume_secret_refs).unwrap_or_default();
        if secrets.is_empty() {
            return;
        }
        for s in &secrets {
            self.secret_volumes
                .entry(s.clone())
                .or_default()
                .insert(name.to_string());
        }
        self.volume_secrets.insert(name.to_string(), secrets);
    }

    /// An Ingress was created or changed (or, with `None`, deleted).
    pub fn set_ingress(&mut self, key: ObjKey, ingress: Option<&Value>) {
        if let Some(old) = self.ingresses.remove(&key) {
            for s in old.tls_secrets {
                let secret = (key.0.clone(), s);
                if let Some(names) = self.tls_ingresses.get_mut(&secret) {
                    names.remove(&key.1);
                    if names.is_empty() {
                        self.tls_ingresses.remove(&secret);
                    }
                }
            }
        }
        let Some(ingress) = ingress else { return };
        let refs = ingress_refs(ingress);
        for s in &refs.tls_secrets {
            self.tls_ingresses
                .entry((key.0.clone(), s.clone()))
                .or_default()
                .insert(key.1.clone());
        }
        self.ingresses.insert(key, refs);
    }

    /// An IngressClass was created or changed (or, with `None`, deleted).
    pub fn set_class(&mut self, name: &str, class: Option<&Value>) {
        match class {
            Some(c) => {
                self.classes.insert(name.to_string(), class_info(c));
            }
            None => {
                self.classes.remove(name);
            }
        }
    }

    /// Applies a stored object of `resource` under `key` (`None`: deleted).
    pub fn apply(&mut self, resource: Resource, key: ObjKey, obj: Option<&Value>) {
        match resource {
            Resource::Pods => self.set_pod(key, obj),
            Resource::Claims => self.set_claim(key, obj),
            Resource::Volumes => self.set_volume(&key.1, obj),
            Resource::Ingresses => self.set_ingress(key, obj),
            Resource::IngressClasses => self.set_class(&key.1, obj),
        }
    }

    /// Forgets everything of `resource` (before a relist).
    pub fn clear(&mut self, resource: Resource) {
        match resource {
            Resource::Pods => {
                self.pods.clear();
                self.edges.clear();
            }
            Resource::Claims => {
                self.claim_volume.clear();
                self.volume_claims.clear();
            }
            Resource::Volumes => {
                self.volume_secrets.clear();
                self.secret_volumes.clear();
            }
            Resource::Ingresses => {
                self.ingresses.clear();
                self.tls_ingresses.clear();
            }
            Resource::IngressClasses => self.classes.clear(),
        }
    }

    /// Adds every object of a listing.
    pub fn load(&mut self, resource: Resource, objects: &[Value]) {
        for obj in objects {
            self.apply(resource, key_of(obj), Some(obj));
        }
    }

    fn edge(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        self.edges.contains_key(&(
            node.to_string(),
            kind,
            namespace.to_string(),
            name.to_string(),
        ))
    }

    /// Whether one of `node`'s pods uses the PV `name` through a claim bound to it.
    pub fn reaches_volume(&self, node: &str, name: &str) -> bool {
        self.volume_claims.get(name).is_some_and(|claims| {
            claims
                .iter()
                .any(|(ns, c)| self.edge(node, Kind::PersistentVolumeClaim, ns, c))
        })
    }

    /// Whether one of `node`'s pods references `kind` `namespace/name` (for secrets, also
    /// through a PV the node's claims are bound to).
    pub fn reaches(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        if self.edge(node, kind, namespace, name) {
            return true;
        }
        kind == Kind::Secret
            && self
                .secret_volumes
                .get(&(namespace.to_string(), name.to_string()))
                .is_some_and(|pvs| pvs.iter().any(|pv| self.reaches_volume(node, pv)))
    }

    /// Whether `namespace/name` is the TLS secret of an Ingress that mini's controller serves
    /// (its class is served by `mini.dev/ingress`, or it has no class while such a class is
    /// the default).
    pub fn is_mini_tls_secret(&self, namespace: &str, name: &str) -> bool {
        let Some(ingresses) = self
            .tls_ingresses
            .get(&(namespace.to_string(), name.to_string()))
        else {
            return false;
        };
        let default_is_mini = self.classes.values().any(|c| c.mini && c.default);
        ingresses.iter().any(|ing| {
            let key = (namespace.to_string(), ing.clone());
            match self.ingresses.get(&key).and_then(|i| i.class.as_ref()) {
                Some(class) => self.classes.get(class).is_some_and(|c| c.mini),
                None => default_is_mini,
            }
        })
    }

    /// How many bound pods the index holds (for logs and tests).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

/// The kinds the index follows, with their store prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Pods,
    Claims,
    Volumes,
    Ingresses,
    IngressClasses,
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::Pods,
        Resource::Claims,
        Resource::Volumes,
        Resource::Ingresses,
        Resource::IngressClasses,
    ];

    /// The store prefix of the whole resource.
    pub fn prefix(self) -> &'static str {
        match self {
            Resource::Pods => "/registry/core/pods/",
            Resource::Claims => "/registry/core/persistentvolumeclaims/",
            Resource::Volumes => "/registry/core/persistentvolumes/",
            Resource::Ingresses => "/registry/networking.k8s.io/ingresses/",
            Resource::IngressClasses => "/registry/networking.k8s.io/ingressclasses/",
        }
    }

    /// Whether objects of this resource live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            Resource::Pods | Resource::Claims | Resource::Ingresses
        )
    }

    /// The (namespace, name) of a store key of this resource.
    pub fn key_of(self, key: &str) -> Option<ObjKey> {
        let rest = key.strip_prefix(self.prefix())?;
        if self.namespaced() {
            let (ns, name) = rest.split_once('/')?;
            Some((ns.to_string(), name.to_string()))
        } else {
            Some((String::new(), rest.to_string()))
        }
    }
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
