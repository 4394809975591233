//! The `VolumeManager`: materialises a pod's volumes under `<pods_dir>/<uid>/volumes/<plugin>/<name>`
//! (fetching configMaps, secrets, service account tokens and PVCs through the API), turns a
//! container's volumeMounts into CRI mounts, and tears it all down when the pod is gone.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Node, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, ServiceAccount, ServiceAccountTokenProjection, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};
use mini_proto::cri::v1::{Mount, MountPropagation};

use crate::atomic::{self, io, FileProjection, Payload};
use crate::{downward, VolumeError};

/// Plugin directory names, as upstream's `kubernetes.io~<plugin>`.
pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
pub const SECRET: &str = "kubernetes.io~secret";
pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
pub const PROJECTED: &str = "kubernetes.io~projected";

/// Default file mode of configMap, secret, downwardAPI and projected volumes (0644).
const DEFAULT_MODE: u32 = 0o644;
/// Default `expirationSeconds` of a serviceAccountToken projection.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// A token is refreshed once this long has passed even if its lifetime is longer (upstream).
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

/// What kind of volume a `MountedVolume` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir,
    HostPath,
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
    PersistentVolumeClaim,
}

/// One volume of a pod, ready to be bind-mounted into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    pub kind: VolumeKind,
    /// The directory (or file, for hostPath) on the node.
    pub host_path: PathBuf,
    /// Mounted read-only whatever the volumeMount says (configMap, secret, downwardAPI,
    /// projected, and PVC volumes with `readOnly: true`), as upstream.
    pub read_only: bool,
}

/// A pod's volumes after `VolumeManager::setup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    pub pod_uid: String,
    /// By volume name.
    pub volumes: BTreeMap<String, MountedVolume>,
    /// When `setup` should be called again at the latest, so service account tokens are
    /// rotated in time (80% of their lifetime); `None` when the pod has no tokens.
    pub refresh_tokens_by: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    pod_uid: String,
    service_account: String,
    audience: String,
    expiration_seconds: i64,
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    refresh_at: SystemTime,
}

/// What the blocking phase of `setup` does for one volume.
enum Plan {
    Dir {
        path: PathBuf,
        tmpfs: Option<Option<u64>>,
    },
    HostPath {
        path: PathBuf,
        type_: String,
        /// Created world-writable when missing (a local-path volume: any container user may
        /// write to its claim, as with k3s' local-path provisioner).
        shared: bool,
    },
    Atomic {
        path: PathBuf,
        payload: Payload,
        /// Backed by tmpfs so the contents never reach the disk (secret, projected).
        tmpfs: bool,
    },
}

/// Sets up and tears down pod volumes on this node.
pub struct VolumeManager {
    client: kube::Client,
    host: Arc<dyn mini_sys::Host>,
    pods_dir: PathBuf,
    node_allocatable: Mutex<Option<BTreeMap<String, Quantity>>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for VolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("pods_dir", &self.pods_dir)
            .finish_non_exhaustive()
    }
}

fn api_err(what: String) -> impl FnOnce(kube::Error) -> VolumeError {
    move |source| VolumeError::Api { what, source }
}

fn set_up_err(volume: &str) -> impl FnOnce(VolumeError) -> VolumeError + '_ {
    move |e| VolumeError::SetUp {
        volume: volume.to_string(),
        source: Box::new(e),
    }
}

/// A pod uid usable as one path element.
fn checked_uid(uid: &str) -> Result<&str, VolumeError> {
    if uid.is_empty() || uid.starts_with('.') || uid.contains('/') || uid.contains('\0') {
        return Err(VolumeError::InvalidPod(format!(
            "pod uid {uid:?} cannot name a directory"
        )));
    }
    Ok(uid)
}

fn mode_of(mode: Option<i32>, default: u32) -> u32 {
    mode.map(|m| (m as u32) & 0o7777).unwrap_or(default)
}

impl VolumeManager {
    pub fn new(client: kube::Client, host: Arc<dyn mini_sys::Host>, pods_dir: PathBuf) -> Self {
        VolumeManager {
            client,
            host,
            pods_dir,
            node_allocatable: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            pod_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The node's allocatable resources, used for `resourceFieldRef` limits a container leaves
    /// unset. Without it, `setup` reads them from the pod's Node object when needed.
    pub fn set_node_allocatable(&self, allocatable: BTreeMap<String, Quantity>) {
        if let Ok(mut slot) = self.node_allocatable.lock() {
            *slot = Some(allocatable);
        }
    }

    /// `<pods_dir>/<uid>`.
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.pods_dir.join(pod_uid)
    }

    fn volume_dir(&self, pod_uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pod_dir(pod_uid)
            .join("volumes")
            .join(plugin)
            .join(name)
    }

    fn pod_lock(&self, pod_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .pod_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(pod_uid.to_string()).or_default().clone()
    }

    /// Creates or refreshes every volume of `pod`. Idempotent: call it again periodically
    /// (at the latest by `PodVolumes::refresh_tokens_by`) to pick up configMap, secret and
    /// downward API changes and to rotate service account tokens. A missing non-optional
    /// configMap or secret, an unbound claim or a failed hostPath check fails with
    /// `VolumeError::SetUp` naming the volume (the kubelet's `FailedMount`).
    pub async fn setup(&self, pod: &Pod) -> Result<PodVolumes, VolumeError> {
        let uid = checked_uid(pod.metadata.uid.as_deref().unwrap_or_default())?.to_string();
        let lock = self.pod_lock(&uid);
        let _guard = lock.lock().await;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();

        let mut result = PodVolumes {
            pod_uid: uid.clone(),
            ..Default::default()
        };
        let mut plans = Vec::new();
        for volume in &volumes {
            let (mounted, plan) = self
                .plan(pod, &uid, &namespace, volume, &mut result.refresh_tokens_by)
                .await
                .map_err(set_up_err(&volume.name))?;
            result.volumes.insert(volume.name.clone(), mounted);
            plans.push((volume.name.clone(), plan));
        }

        let host = self.host.clone();
        tokio::task::spawn_blocking(move || {
            for (name, plan) in plans {
                execute(host.as_ref(), plan).map_err(set_up_err(&name))?;
            }
            Ok::<(), VolumeError>(())
        })
        .await
        .map_err(|e| VolumeError::Io {
            op: "set up volumes",
            path: self.pod_dir(&uid),
            source: std::io::Error::other(e.to_string()),
        })??;
        Ok(result)
    }

    async fn plan(
        &self,
        pod: &Pod,
        uid: &str,
        namespace: &str,
        volume: &Volume,
        refresh_by: &mut Option<SystemTime>,
    ) -> Result<(MountedVolume, Plan), VolumeError> {
        let name = &volume.name;
        if let Some(src) = &volume.empty_dir {
            let path = self.volume_dir(uid, EMPTY_DIR, name);
            let tmpfs = match src.medium.as_deref().unwrap_or_default() {
                "" => None,
                "Memory" => Some(match &src.size_limit {
                    Some(q) => Some(quantity_bytes(q, "emptyDir.sizeLimit")?),
                    None => None,
                }),
                other => {
                    return Err(VolumeError::UnsupportedVolume(format!(
                        "emptyDir medium {other:?}"
                    )))
                }
            };
            return Ok((
                mounted(VolumeKind::EmptyDir, &path, false),
                Plan::Dir { path, tmpfs },
            ));
        }
        if let Some(src) = &volume.host_path {
            let path = PathBuf::from(&src.path);
            return Ok((
                mounted(VolumeKind::HostPath, &path, false),
                Plan::HostPath {
                    path,
                    type_: src.type_.clone().unwrap_or_default(),
                    shared: false,
                },
            ));
        }
        if let Some(src) = &volume.config_map {
            let path = self.volume_dir(uid, CONFIG_MAP, name);
            let mut payload = Payload::new();
            let mode = mode_of(src.default_mode, DEFAULT_MODE);
            self.config_map_payload(
                namespace,
                &src.name,
                src.items.as_deref(),
                src.optional,
                mode,
                &mut payload,
            )
            .await?;
            return Ok((
                mounted(VolumeKind::ConfigMap, &path, true),
                Plan::Atomic {
                    path,
                    payload,
                    tmpfs: false,
                },
            ));
        }
        if let Some(src) = &volume.secret {
            let path = self.volume_dir(uid, SECRET, name);
            let mut payload = Payload::new();
            let mode = mode_of(src.default_mode, DEFAULT_MODE);
            let secret_name = src.secret_name.clone().unwrap_or_default();
            self.secret_payload(
                namespace,
                &secret_name,
                src.items.as_deref(),
                src.optional,
                mode,
                &mut payload,
            )
            .await?;
            return Ok((
                mounted(VolumeKind::Secret, &path, true),
                Plan::Atomic {
                    path,
                    payload,
                    tmpfs: true,
                },
            ));
        }
        if let Some(src) = &volume.downward_api {
            let path = self.volume_dir(uid, DOWNWARD_API, name);
            let mut payload = Payload::new();
            let mode = mode_of(src.default_mode, DEFAULT_MODE);
            self.downward_payload(
                pod,
                src.items.as_deref().unwrap_or_default(),
                mode,
                &mut payload,
            )
            .await?;
            return Ok((
                mounted(VolumeKind::DownwardApi, &path, true),
                Plan::Atomic {
                    path,
                    payload,
                    tmpfs: false,
                },
            ));
        }
        if let Some(src) = &volume.projected {
            let path = self.volume_dir(uid, PROJECTED, name);
            let mut payload = Payload::new();
            let mode = mode_of(src.default_mode, DEFAULT_MODE);
            for source in src.sources.iter().flatten() {
                if let Some(cm) = &source.config_map {
                    self.config_map_payload(
                        namespace,
                        &cm.name,
                        cm.items.as_deref(),
                        cm.optional,
                        mode,
                        &mut payload,
                    )
                    .await?;
                } else if let Some(s) = &source.secret {
                    self.secret_payload(
                        namespace,
                        &s.name,
                        s.items.as_deref(),
                        s.optional,
                        mode,
                        &mut payload,
                    )
                    .await?;
                } else if let Some(d) = &source.downward_api {
                    self.downward_payload(
                        pod,
                        d.items.as_deref().unwrap_or_default(),
                        mode,
                        &mut payload,
                    )
                    .await?;
                } else if let Some(t) = &source.service_account_token {
                    let (token, refresh_at) = self.service_account_token(pod, t).await?;
                    *refresh_by = Some(refresh_by.map_or(refresh_at, |r| r.min(refresh_at)));
                    payload.insert(
                        t.path.clone(),
                        FileProjection {
                            data: token.into_bytes(),
                            mode,
                        },
                    );
                } else {
                    return Err(VolumeError::UnsupportedVolume(
                        "projected source (supported: configMap, secret, downwardAPI, serviceAccountToken)".into(),
                    ));
                }
            }
            return Ok((
                mounted(VolumeKind::Projected, &path, true),
                Plan::Atomic {
                    path,
                    payload,
                    tmpfs: true,
                },
            ));
        }
        if let Some(src) = &volume.persistent_volume_claim {
            let (path, type_, shared) = self.claim_path(namespace, &src.claim_name).await?;
            return Ok((
                mounted(
                    VolumeKind::PersistentVolumeClaim,
                    &path,
                    src.read_only.unwrap_or(false),
                ),
                Plan::HostPath {
                    path,
                    type_,
                    shared,
                },
            ));
        }
        Err(VolumeError::UnsupportedVolume(volume_type_name(volume)))
    }

    /// Reads the configMap or secret a volume projects: `Ok(None)` when it is missing and the
    /// volume says `optional`, an error naming it when it is missing otherwise.
    async fn get_source<K>(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Option<K>, VolumeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let found = api
            .get_opt(name)
            .await
            .map_err(api_err(format!("getting {kind} {namespace}/{name}")))?;
        match found {
            Some(object) => Ok(Some(object)),
            None if optional.unwrap_or(false) => Ok(None),
            None => Err(VolumeError::SourceNotFound {
                kind,
                name: name.to_string(),
            }),
        }
    }

    async fn config_map_payload(
        &self,
        namespace: &str,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
        default_mode: u32,
        payload: &mut Payload,
    ) -> Result<(), VolumeError> {
        let Some(cm) = self
            .get_source::<ConfigMap>("configmap", namespace, name, optional)
            .await?
        else {
            return Ok(());
        };
        let optional = optional.unwrap_or(false);
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.unwrap_or_default() {
            data.insert(k, v.0);
        }
        project_keys("configmap", data, items, optional, default_mode, payload)
    }

    async fn secret_payload(
        &self,
        namespace: &str,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
        default_mode: u32,
        payload: &mut Payload,
    ) -> Result<(), VolumeError> {
        let Some(secret) = self
            .get_source::<Secret>("secret", namespace, name, optional)
            .await?
        else {
            return Ok(());
        };
        let optional = optional.unwrap_or(false);
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in secret.string_data.unwrap_or_default() {
            data.insert(k, v.into_bytes());
        }
        project_keys("secret", data, items, optional, default_mode, payload)
    }

    async fn downward_payload(
        &self,
        pod: &Pod,
        items: &[DownwardAPIVolumeFile],
        default_mode: u32,
        payload: &mut Payload,
    ) -> Result<(), VolumeError> {
        for item in items {
            let value = if let Some(f) = &item.field_ref {
                downward::field_ref_value(pod, &f.field_path)?
            } else if let Some(r) = &item.resource_field_ref {
                let container = r.container_name.clone().unwrap_or_default();
                let allocatable = self.allocatable(pod).await?;
                downward::resource_field_value(
                    pod,
                    &container,
                    &r.resource,
                    r.divisor.as_ref(),
                    &allocatable,
                )?
            } else {
                return Err(VolumeError::InvalidPath {
                    path: item.path.clone(),
                    message: "downwardAPI item has neither fieldRef nor resourceFieldRef".into(),
                });
            };
            payload.insert(
                item.path.clone(),
                FileProjection {
                    data: value.into_bytes(),
                    mode: mode_of(item.mode, default_mode),
                },
            );
        }
        Ok(())
    }

    async fn allocatable(&self, pod: &Pod) -> Result<BTreeMap<String, Quantity>, VolumeError> {
        if let Some(a) = self
            .node_allocatable
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
        {
            return Ok(a);
        }
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let api: Api<Node> = Api::all(self.client.clone());
        let node = api.get(&node_name).await.map_err(api_err(format!(
            "getting node {node_name:?} for its allocatable resources"
        )))?;
        Ok(node.status.and_then(|s| s.allocatable).unwrap_or_default())
    }

    /// A token for the pod's service account from the TokenRequest API, bound to the pod;
    /// cached until 80% of its lifetime (or 24 h) has passed.
    async fn service_account_token(
        &self,
        pod: &Pod,
        source: &ServiceAccountTokenProjection,
    ) -> Result<(String, SystemTime), VolumeError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let key = TokenKey {
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            service_account: service_account.clone(),
            audience: source.audience.clone().unwrap_or_default(),
            expiration_seconds: source.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
        };
        let now = SystemTime::now();
        if let Some(cached) = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned()) {
            if now < cached.refresh_at {
                return Ok((cached.token, cached.refresh_at));
            }
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if key.audience.is_empty() {
                    Vec::new()
                } else {
                    vec![key.audience.clone()]
                },
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let response = api
            .create_token_request(&service_account, &PostParams::default(), &request)
            .await
            .map_err(api_err(format!(
                "requesting a token for serviceaccount {namespace}/{service_account}"
            )))?;
        let token = response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| VolumeError::EmptyToken {
                service_account: format!("{namespace}/{service_account}"),
            })?;
        let lifetime_secs = response
            .spec
            .expiration_seconds
            .unwrap_or(key.expiration_seconds)
            .max(1) as u64;
        let refresh_after = Duration::from_secs(lifetime_secs * 8 / 10).min(MAX_TOKEN_AGE);
        let refresh_at = now + refresh_after;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(
                key,
                CachedToken {
                    token: token.clone(),
                    refresh_at,
                },
            );
        }
        Ok((token, refresh_at))
    }

    /// The node path behind a bound claim: its PV's `spec.hostPath.path` or `spec.local.path`.
    async fn claim_path(
        &self,
        namespace: &str,
        claim: &str,
    ) -> Result<(PathBuf, String, bool), VolumeError> {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let pvc = claims
            .get_opt(claim)
            .await
            .map_err(api_err(format!(
                "getting persistentvolumeclaim {namespace}/{claim}"
            )))?
            .ok_or_else(|| VolumeError::SourceNotFound {
                kind: "persistentvolumeclaim",
                name: claim.to_string(),
            })?;
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| VolumeError::ClaimNotBound {
                name: claim.to_string(),
                reason: "spec.volumeName is empty (no persistentvolume bound yet)".into(),
            })?;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = volumes
            .get_opt(&pv_name)
            .await
            .map_err(api_err(format!("getting persistentvolume {pv_name}")))?
            .ok_or_else(|| VolumeError::ClaimNotBound {
                name: claim.to_string(),
                reason: format!("its persistentvolume {pv_name:?} does not exist"),
            })?;
        let local_path = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
            .is_some_and(|p| p == LOCAL_PATH_PROVISIONER);
        let spec = pv.spec.unwrap_or_default();
        if let Some(r) = &spec.claim_ref {
            let same_claim = r.name.as_deref() == Some(claim)
                && r.namespace.as_deref() == Some(namespace)
                && (r.uid.is_none() || r.uid == pvc.metadata.uid);
            if !same_claim {
                return Err(VolumeError::ClaimNotBound {
                    name: claim.to_string(),
                    reason: format!(
                        "persistentvolume {pv_name:?} is claimed by {}/{}",
                        r.namespace.clone().unwrap_or_default(),
                        r.name.clone().unwrap_or_default()
                    ),
                });
            }
        }
        if let Some(h) = spec.host_path {
            return Ok((
                PathBuf::from(h.path),
                h.type_.unwrap_or_default(),
                local_path,
            ));
        }
        if let Some(l) = spec.local {
            return Ok((PathBuf::from(l.path), "Directory".into(), false));
        }
        Err(VolumeError::UnsupportedPersistentVolume { name: pv_name })
    }

    /// The CRI mounts for `container`'s volumeMounts: readOnly (forced for configMap, secret,
    /// downwardAPI and projected volumes), subPath / subPathExpr (created when missing, never
    /// allowed to resolve outside the volume), mountPropagation.
    pub fn mounts_for(
        &self,
        pod: &Pod,
        container: &Container,
        volumes: &PodVolumes,
    ) -> Result<Vec<Mount>, VolumeError> {
        let mut mounts = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let volume =
                volumes
                    .volumes
                    .get(&vm.name)
                    .ok_or_else(|| VolumeError::UnknownVolume {
                        container: container.name.clone(),
                        volume: vm.name.clone(),
                    })?;
            let sub_path = match (&vm.sub_path, &vm.sub_path_expr) {
                (Some(p), _) if !p.is_empty() => p.clone(),
                (_, Some(expr)) if !expr.is_empty() => expand_env(expr, pod, container),
                _ => String::new(),
            };
            let host_path = if sub_path.is_empty() {
                volume.host_path.clone()
            } else {
                resolve_sub_path(&volume.host_path, &sub_path)?
            };
            let propagation = match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => MountPropagation::PropagationBidirectional,
                _ => MountPropagation::PropagationPrivate,
            };
            mounts.push(Mount {
                container_path: vm.mount_path.clone(),
                host_path: host_path.to_string_lossy().into_owned(),
                readonly: vm.read_only.unwrap_or(false) || volume.read_only,
                propagation: propagation as i32,
                ..Default::default()
            });
        }
        Ok(mounts)
    }

    /// Unmounts the pod's tmpfs volumes (memory emptyDirs, secrets, projected) and removes `<pods_dir>/<uid>`. Call it once the
    /// pod's containers are gone. Idempotent.
    pub async fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        let uid = checked_uid(pod_uid)?.to_string();
        let lock = self.pod_lock(&uid);
        let _guard = lock.lock().await;
        let dir = self.pod_dir(&uid);
        let host = self.host.clone();
        let dir_for_task = dir.clone();
        tokio::task::spawn_blocking(move || teardown_dir(host.as_ref(), &dir_for_task))
            .await
            .map_err(|e| VolumeError::Io {
                op: "tear down volumes",
                path: dir,
                source: std::io::Error::other(e.to_string()),
            })??;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|k, _| k.pod_uid != uid);
        }
        if let Ok(mut locks) = self.pod_locks.lock() {
            locks.remove(&uid);
        }
        Ok(())
    }
}

fn mounted(kind: VolumeKind, path: &Path, read_only: bool) -> MountedVolume {
    MountedVolume {
        kind,
        host_path: path.to_path_buf(),
        read_only,
    }
}

fn volume_type_name(volume: &Volume) -> String {
    let v = serde_json::to_value(volume).unwrap_or_default();
    v.as_object()
        .and_then(|o| o.keys().find(|k| k.as_str() != "name").cloned())
        .unwrap_or_else(|| "(none given)".to_string())
}

fn quantity_bytes(q: &Quantity, what: &str) -> Result<u64, VolumeError> {
    let milli = mini_api::Quantity::parse(&q.0)
        .map_err(|e| VolumeError::InvalidQuantity {
            what: what.to_string(),
            message: e.to_string(),
        })?
        .milli();
    Ok(((milli.max(0) + 999) / 1000) as u64)
}

/// configMap/secret data -> payload entries: every key, or the listed items.
fn project_keys(
    kind: &'static str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: u32,
    payload: &mut Payload,
) -> Result<(), VolumeError> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(d) => {
                        payload.insert(
                            item.path.clone(),
                            FileProjection {
                                data: d.clone(),
                                mode: mode_of(item.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::MissingKey {
                            kind,
                            key: item.key.clone(),
                        })
                    }
                }
            }
        }
        _ => {
            for (k, d) in data {
                payload.insert(
                    k,
                    FileProjection {
                        data: d,
                        mode: default_mode,
                    },
                );
            }
        }
    }
    Ok(())
}

/// The blocking half of `setup` for one volume.
fn execute(host: &dyn mini_sys::Host, plan: Plan) -> Result<(), VolumeError> {
    match plan {
        Plan::Dir { path, tmpfs } => {
            std::fs::create_dir_all(&path).map_err(io("create dir", &path))?;
            if let Some(size) = tmpfs {
                ensure_tmpfs(host, &path, size)?;
            }
            // emptyDirs are world-writable as upstream, so any container user can write
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .map_err(io("chmod", &path))?;
            Ok(())
        }
        Plan::HostPath {
            path,
            type_,
            shared,
        } => check_host_path(&path, &type_, if shared { 0o777 } else { 0o755 }),
        Plan::Atomic {
            path,
            payload,
            tmpfs,
        } => {
            if tmpfs {
                std::fs::create_dir_all(&path).map_err(io("create dir", &path))?;
                ensure_tmpfs(host, &path, None)?;
            }
            atomic::write(&path, &payload).map(|_| ())
        }
    }
}

/// Mounts a tmpfs on `path` unless one is there. The check uses the canonical path, as the
/// mount table does, so a relative or symlinked pods dir never stacks a second tmpfs on top.
fn ensure_tmpfs(
    host: &dyn mini_sys::Host,
    path: &Path,
    size: Option<u64>,
) -> Result<(), VolumeError> {
    let real = std::fs::canonicalize(path).map_err(io("resolve", path))?;
    if !host.is_mount_point(&real)? {
        host.mount_tmpfs(&real, size)?;
    }
    Ok(())
}

/// The provisioner name on PVs made by mini's local-path provisioner (mini-localpath).
const LOCAL_PATH_PROVISIONER: &str = "mini.dev/local-path";

/// Upstream's hostPath `type` checks; `DirectoryOrCreate`/`FileOrCreate` create what is missing.
fn check_host_path(path: &Path, type_: &str, dir_mode: u32) -> Result<(), VolumeError> {
    let fail = |message: &str| VolumeError::HostPathType {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    let meta = std::fs::metadata(path);
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(fail("is not a directory")),
            Err(_) => {
                std::fs::create_dir_all(path).map_err(io("create dir", path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode))
                    .map_err(io("chmod", path))
            }
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(fail("is not a file")),
            Err(_) => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io("create file", path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io("chmod", path))
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(fail("is not a directory")),
            Err(_) => Err(fail("does not exist")),
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(fail("is not a file")),
            Err(_) => Err(fail("does not exist")),
        },
        "Socket" | "CharDevice" | "BlockDevice" => {
            let m = meta.map_err(|_| fail("does not exist"))?;
            let t = m.file_type();
            let ok = match type_ {
                "Socket" => t.is_socket(),
                "CharDevice" => t.is_char_device(),
                _ => t.is_block_device(),
            };
            if ok {
                Ok(())
            } else {
                Err(fail(&format!("is not a {}", type_.to_lowercase())))
            }
        }
        other => Err(fail(&format!("has an unknown hostPath type {other:?}"))),
    }
}

/// `root/sub`, created as a directory when missing, and refused when it resolves (through
/// symlinks a container may have planted) outside `root`.
fn resolve_sub_path(root: &Path, sub: &str) -> Result<PathBuf, VolumeError> {
    atomic::validate_path(sub)?;
    let full = root.join(sub);
    if std::fs::symlink_metadata(&full).is_err() {
        std::fs::create_dir_all(&full).map_err(io("create subPath", &full))?;
    }
    let real_root = std::fs::canonicalize(root).map_err(io("resolve", root))?;
    let real = std::fs::canonicalize(&full).map_err(io("resolve", &full))?;
    if !real.starts_with(&real_root) {
        return Err(VolumeError::InvalidPath {
            path: sub.to_string(),
            message: format!("subPath resolves to {}, outside the volume", real.display()),
        });
    }
    Ok(real)
}

/// `$(VAR)` references in a subPathExpr, from the container's literal and fieldRef env;
/// `$$` is a literal `$`; unknown references stay as written (upstream's expansion rules).
fn expand_env(expr: &str, pod: &Pod, container: &Container) -> String {
    let mut vars = HashMap::new();
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(v.clone())
        } else {
            e.value_from
                .as_ref()
                .and_then(|f| f.field_ref.as_ref())
                .and_then(|f| downward::field_ref_value(pod, &f.field_path).ok())
        };
        if let Some(v) = value {
            vars.insert(e.name.clone(), v);
        }
    }
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn teardown_dir(host: &dyn mini_sys::Host, dir: &Path) -> Result<(), VolumeError> {
    // tmpfs-backed volumes (memory emptyDirs, secrets, projected) are unmounted first
    let dir = match std::fs::canonicalize(dir) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("resolve", dir)(e)),
    };
    let dir = dir.as_path();
    let volumes = dir.join("volumes");
    for plugin in read_dir_paths(&volumes)? {
        for volume in read_dir_paths(&plugin)? {
            if host.is_mount_point(&volume)? {
                host.unmount(&volume)?;
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove dir", dir)(e)),
    }
}

/// The entries of a directory that is a real directory (not a symlink); none when missing.
fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        _ => return Ok(Vec::new()),
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("read dir", dir))? {
        let entry = entry.map_err(io("read dir", dir))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
