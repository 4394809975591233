//! The deployer: applies each manifest file with server-side apply (field manager `mini`),
//! records what it applied in the file's Addon, removes what left the file or the directory,
//! and reports broken documents as Warning Events naming the file and line.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::Client;
use mini_runtime::{EventRecorder, EventType};
use serde_json::{json, Value};

use crate::addon::{self, CRD_NAME, NAMESPACE};
use crate::documents::{self, ObjectRef, RefKey};
use crate::files::ManifestFiles;
use crate::{bundled, ManifestsConfig, ManifestsError, FIELD_MANAGER};

/// A file whose apply failed at the API (not a parse error) is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long a CRD applied from a file may take to be Established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What the deployer last did with a file.
#[derive(Debug, Clone)]
struct FileState {
    checksum: String,
    addon: String,
    retry_at: Option<Instant>,
}

/// What one pass over the directory did (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Files applied (new or changed), by file name.
    pub applied: Vec<String>,
    /// Addons whose files went away, removed with their objects.
    pub removed: Vec<String>,
}

/// The result of applying one file.
#[derive(Debug, Clone, Default)]
pub struct FileOutcome {
    /// `file:line: message` per problem.
    pub errors: Vec<String>,
    pub applied: Vec<ObjectRef>,
    pub pruned: Vec<ObjectRef>,
    /// Whether an API call failed (worth trying again without a change of the file).
    pub retry: bool,
}

/// Applies a manifests directory to the cluster.
pub struct Deployer {
    client: Client,
    files: Arc<dyn ManifestFiles>,
    dir: PathBuf,
    disabled: BTreeSet<String>,
    recorder: EventRecorder,
    state: HashMap<String, FileState>,
    removal_retry: HashMap<String, Instant>,
}

impl Deployer {
    pub fn new(client: Client, files: Arc<dyn ManifestFiles>, config: &ManifestsConfig) -> Self {
        Deployer {
            recorder: EventRecorder::new(client.clone(), "mini-manifests"),
            client,
            files,
            dir: config.dir.clone(),
            disabled: config.disabled.iter().cloned().collect(),
            state: HashMap::new(),
            removal_retry: HashMap::new(),
        }
    }

    /// Writes the bundled manifests not disabled, removes the disabled ones.
    pub fn write_bundled(&self) -> Result<(), ManifestsError> {
        let done = bundled::sync(self.files.as_ref(), &self.dir, &self.disabled).map_err(|e| {
            ManifestsError::Io {
                path: self.dir.display().to_string(),
                source: e,
            }
        })?;
        for (name, action) in done {
            tracing::debug!(manifest = name, ?action, "bundled manifest");
        }
        Ok(())
    }

    /// Applies the Addon CRD and waits until it is Established.
    pub async fn ensure_crd(&self) -> Result<(), ManifestsError> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        crds.patch(CRD_NAME, &apply_params(), &Patch::Apply(addon::crd()))
            .await?;
        mini_runtime::crd::wait_established(&self.client, CRD_NAME, ESTABLISH_TIMEOUT)
            .await
            .map_err(|e| ManifestsError::Crd(e.to_string()))
    }

    fn addons(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), NAMESPACE, &addon_resource())
    }

    /// One pass: applies new and changed files, removes the Addons (and objects) of files
    /// that are gone or disabled. A directory that cannot be listed removes nothing.
    pub async fn sync_once(&mut self) -> Result<SyncReport, ManifestsError> {
        let listed = self.files.list(&self.dir).map_err(|e| ManifestsError::Io {
            path: self.dir.display().to_string(),
            source: e,
        })?;
        let manifests: Vec<String> = listed
            .into_iter()
            .filter(|n| documents::is_manifest_file(n))
            .filter(|n| !self.disabled.contains(documents::file_stem(n)))
            .collect();
        let names = addon::addon_names(&manifests);
        let mut report = SyncReport::default();
        let now = Instant::now();
        for (file, addon_name) in &names {
            let path = self.dir.join(file);
            let bytes = match self.files.read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "reading manifest failed");
                    continue;
                }
            };
            let sum = documents::checksum(&bytes);
            if let Some(st) = self.state.get(file) {
                let due = st.retry_at.is_some_and(|t| now >= t);
                if st.checksum == sum && &st.addon == addon_name && !due {
                    continue;
                }
            }
            let retry = match self.apply_file(file, addon_name, &bytes, &sum).await {
                Ok(outcome) => {
                    report.applied.push(file.clone());
                    outcome.retry
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "applying manifest failed; trying again later");
                    true
                }
            };
            self.state.insert(
                file.clone(),
                FileState {
                    checksum: sum,
                    addon: addon_name.clone(),
                    retry_at: retry.then(|| now + RETRY_AFTER),
                },
            );
        }
        self.state.retain(|file, _| names.contains_key(file));

        let wanted: BTreeSet<&String> = names.values().collect();
        let addons = self.addons().list(&Default::default()).await?;
        for addon in addons.items {
            let name = addon.metadata.name.clone().unwrap_or_default();
            if wanted.contains(&name) {
                continue;
            }
            if self.removal_retry.get(&name).is_some_and(|t| now < *t) {
                continue;
            }
            let value = serde_json::to_value(&addon).unwrap_or_default();
            if self.remove_addon(&name, &value).await? {
                self.removal_retry.remove(&name);
                report.removed.push(name);
            } else {
                self.removal_retry.insert(name, now + RETRY_AFTER);
            }
        }
        Ok(report)
    }

    /// Applies one file's objects, prunes what left it, records the result in its Addon and
    /// reports problems as Events. Errors are only those of the Addon itself.
    pub async fn apply_file(
        &self,
        file: &str,
        addon_name: &str,
        bytes: &[u8],
        checksum: &str,
    ) -> Result<FileOutcome, ManifestsError> {
        let path = self.dir.join(file);
        let shown = path.display().to_string();
        let parsed = match std::str::from_utf8(bytes) {
            Ok(text) => documents::parse(file, text),
            Err(e) => documents::Parsed {
                objects: Vec::new(),
                errors: vec![documents::DocumentError {
                    line: 1 + bytes[..e.valid_up_to()]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count(),
                    message: "the file is not UTF-8".into(),
                }],
            },
        };

        let addons = self.addons();
        let previous = addons
            .get_opt(addon_name)
            .await?
            .map(|a| addon::status_refs(&serde_json::to_value(a).unwrap_or_default()))
            .unwrap_or_default();
        let applied_addon = addons
            .patch(
                addon_name,
                &apply_params(),
                &Patch::Apply(json!({
                    "apiVersion": format!("{}/{}", addon::GROUP, addon::VERSION),
                    "kind": addon::KIND,
                    "metadata": {"name": addon_name, "namespace": NAMESPACE},
                    "spec": {"source": shown, "checksum": checksum},
                })),
            )
            .await?;
        let reference = ObjectReference {
            api_version: Some(format!("{}/{}", addon::GROUP, addon::VERSION)),
            kind: Some(addon::KIND.into()),
            name: Some(addon_name.into()),
            namespace: Some(NAMESPACE.into()),
            uid: applied_addon.metadata.uid.clone(),
            ..Default::default()
        };

        let mut outcome = FileOutcome {
            errors: parsed
                .errors
                .iter()
                .map(|e| format!("{shown}:{}: {}", e.line, e.message))
                .collect(),
            ..Default::default()
        };
        let mut docs = parsed.objects.clone();
        docs.sort_by_key(|d| documents::apply_rank(d.object["kind"].as_str().unwrap_or_default()));

        let mut resolver = Resolver::new(self.client.clone());
        let mut desired = Vec::new();
        // objects of kinds that cannot be resolved: whatever namespace, never pruned
        let mut unresolved = BTreeSet::new();
        let mut pending_crds: Vec<String> = Vec::new();
        for doc in &docs {
            let kind = doc.object["kind"].as_str().unwrap_or_default();
            if documents::apply_rank(kind) > 1 && !pending_crds.is_empty() {
                for crd in pending_crds.drain(..) {
                    if let Err(e) =
                        mini_runtime::crd::wait_established(&self.client, &crd, ESTABLISH_TIMEOUT)
                            .await
                    {
                        outcome.errors.push(format!("{shown}: {e}"));
                    }
                }
                resolver.forget();
            }
            let written_ns = doc.object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let probe = ObjectRef::of(&doc.object, &written_ns);
            let (resource, caps) = match resolver.resolve(&probe).await {
                Ok(found) => found,
                Err(message) => {
                    outcome.errors.push(format!(
                        "{shown}:{}: {} {}: {message}",
                        doc.line, probe.api_version, probe.kind
                    ));
                    unresolved.insert((probe.group().to_string(), probe.kind, probe.name));
                    outcome.retry = true;
                    continue;
                }
            };
            let mut object = doc.object.clone();
            let namespace = if caps.scope == Scope::Namespaced {
                let ns = if written_ns.is_empty() {
                    "default".to_string()
                } else {
                    written_ns
                };
                object["metadata"]["namespace"] = Value::String(ns.clone());
                ns
            } else {
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove("namespace");
                }
                String::new()
            };
            let r = ObjectRef::of(&object, &namespace);
            desired.push(r.clone());
            let api = dynamic_api(&self.client, &resource, &namespace);
            match api
                .patch(&r.name, &apply_params(), &Patch::Apply(&object))
                .await
            {
                Ok(_) => {
                    if r.kind == "CustomResourceDefinition" {
                        pending_crds.push(r.name.clone());
                    }
                    outcome.applied.push(r);
                }
                Err(e) => {
                    outcome.errors.push(format!(
                        "{shown}:{}: {}: {}",
                        doc.line,
                        r.describe(),
                        api_message(&e)
                    ));
                    outcome.retry = true;
                }
            }
        }
        for crd in pending_crds.drain(..) {
            if let Err(e) =
                mini_runtime::crd::wait_established(&self.client, &crd, ESTABLISH_TIMEOUT).await
            {
                outcome.errors.push(format!("{shown}: {e}"));
            }
        }

        let prune: Vec<ObjectRef> = addon::prune_set(&previous, &desired, parsed.errors.is_empty())
            .into_iter()
            .filter(|r| {
                !unresolved.contains(&(r.group().to_string(), r.kind.clone(), r.name.clone()))
            })
            .collect();
        let claimed = if prune.is_empty() {
            BTreeSet::new()
        } else {
            self.claimed_elsewhere(addon_name).await?
        };
        let mut released = Vec::new();
        for r in prune {
            if claimed.contains(&r.key()) {
                // moved to another file: that file's Addon owns it now
                released.push(r);
                continue;
            }
            match delete_object(&self.client, &mut resolver, &r).await {
                Ok(()) => outcome.pruned.push(r),
                Err(message) => {
                    outcome
                        .errors
                        .push(format!("{shown}: removing {}: {message}", r.describe()));
                    outcome.retry = true;
                }
            }
        }

        released.extend(outcome.pruned.iter().cloned());
        let refs = addon::merge_refs(&previous, &released, &outcome.applied);
        let last_error = outcome.errors.join("; ");
        addons
            .patch_status(
                addon_name,
                &apply_params(),
                &Patch::Apply(json!({
                    "apiVersion": format!("{}/{}", addon::GROUP, addon::VERSION),
                    "kind": addon::KIND,
                    "metadata": {"name": addon_name, "namespace": NAMESPACE},
                    "status": {
                        "objects": refs.iter().map(ObjectRef::to_json).collect::<Vec<_>>(),
                        "objectCount": refs.len(),
                        "lastError": last_error,
                    },
                })),
            )
            .await?;

        for message in &outcome.errors {
            tracing::warn!(addon = addon_name, "{message}");
            self.event(
                &reference,
                EventType::Warning,
                "ApplyManifestFailed",
                message,
            )
            .await;
        }
        if outcome.errors.is_empty() {
            let mut message = format!("applied {} object(s) from {shown}", outcome.applied.len());
            if !outcome.pruned.is_empty() {
                let pruned: Vec<String> = outcome.pruned.iter().map(ObjectRef::describe).collect();
                message.push_str(&format!("; removed {}", pruned.join(", ")));
            }
            tracing::info!(addon = addon_name, "{message}");
            self.event(&reference, EventType::Normal, "AppliedManifest", &message)
                .await;
        }
        Ok(outcome)
    }

    /// Removes the objects of an Addon whose file is gone, then the Addon. Returns false (and
    /// reports a Warning Event) while some object cannot be removed.
    async fn remove_addon(&self, name: &str, addon: &Value) -> Result<bool, ManifestsError> {
        let claimed = self.claimed_elsewhere(name).await?;
        let mut refs: Vec<ObjectRef> = addon::status_refs(addon)
            .into_iter()
            .filter(|r| !claimed.contains(&r.key()))
            .collect();
        addon::sort_for_removal(&mut refs);
        let source = addon["spec"]["source"].as_str().unwrap_or(name).to_string();
        let mut resolver = Resolver::new(self.client.clone());
        let mut failed = Vec::new();
        for r in &refs {
            if let Err(message) = delete_object(&self.client, &mut resolver, r).await {
                failed.push(format!("removing {}: {message}", r.describe()));
            }
        }
        if !failed.is_empty() {
            let reference = ObjectReference {
                api_version: Some(format!("{}/{}", addon::GROUP, addon::VERSION)),
                kind: Some(addon::KIND.into()),
                name: Some(name.into()),
                namespace: Some(NAMESPACE.into()),
                uid: addon["metadata"]["uid"].as_str().map(str::to_string),
                ..Default::default()
            };
            for message in failed {
                let message = format!("{source} was removed; {message}");
                tracing::warn!(addon = name, "{message}");
                self.event(
                    &reference,
                    EventType::Warning,
                    "RemoveManifestFailed",
                    &message,
                )
                .await;
            }
            return Ok(false);
        }
        match self.addons().delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(addon = name, file = %source, objects = refs.len(), "manifest removed; its objects are deleted");
        Ok(true)
    }

    /// The objects other Addons record: an object moved from one file to another is not
    /// deleted when it leaves the first.
    async fn claimed_elsewhere(
        &self,
        addon_name: &str,
    ) -> Result<BTreeSet<RefKey>, ManifestsError> {
        let addons = self.addons().list(&Default::default()).await?;
        Ok(addons
            .items
            .iter()
            .filter(|a| a.metadata.name.as_deref() != Some(addon_name))
            .flat_map(|a| addon::status_refs(&serde_json::to_value(a).unwrap_or_default()))
            .map(|r| r.key())
            .collect())
    }

    async fn event(&self, reference: &ObjectReference, t: EventType, reason: &str, message: &str) {
        if let Err(e) = self.recorder.record(reference, t, reason, message).await {
            tracing::debug!(error = %e, reason, "recording event failed");
        }
    }

    /// The manifests directory this deployer watches.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn addon_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(addon::GROUP, addon::VERSION, addon::KIND),
        addon::PLURAL,
    )
}

fn dynamic_api(client: &Client, resource: &ApiResource, namespace: &str) -> Api<DynamicObject> {
    if namespace.is_empty() {
        Api::all_with(client.clone(), resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, resource)
    }
}

/// The API's message for a failed call (`Status.message` when there is one).
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Kind -> resource by discovery of the object's group version, cached for one file.
struct Resolver {
    client: Client,
    cache: HashMap<(String, String), Result<(ApiResource, ApiCapabilities), String>>,
}

impl Resolver {
    fn new(client: Client) -> Self {
        Resolver {
            client,
            cache: HashMap::new(),
        }
    }

    /// Forgets what discovery said (after CRDs were applied).
    fn forget(&mut self) {
        self.cache.clear();
    }

    async fn resolve(&mut self, r: &ObjectRef) -> Result<(ApiResource, ApiCapabilities), String> {
        let key = (r.api_version.clone(), r.kind.clone());
        if let Some(found) = self.cache.get(&key) {
            return found.clone();
        }
        let gvk = GroupVersionKind::gvk(r.group(), r.version(), &r.kind);
        let found = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok(found) => Ok(found),
            Err(kube::Error::Discovery(_)) => {
                Err("unknown kind (no such resource is served)".to_string())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Err(format!(
                "unknown kind (API version {} is not served)",
                r.api_version
            )),
            Err(e) => Err(api_message(&e)),
        };
        self.cache.insert(key, found.clone());
        found
    }
}

/// Deletes an object applied before; an object (or kind) that is already gone is done.
async fn delete_object(
    client: &Client,
    resolver: &mut Resolver,
    r: &ObjectRef,
) -> Result<(), String> {
    let (resource, _) = match resolver.resolve(r).await {
        Ok(found) => found,
        // the kind went away (its CRD was deleted): so did the object
        Err(message) if message.starts_with("unknown kind") => return Ok(()),
        Err(message) => return Err(message),
    };
    let api = dynamic_api(client, &resource, &r.namespace);
    match api.delete(&r.name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(api_message(&e)),
    }
}
