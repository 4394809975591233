//! ControllerRevision history shared by the StatefulSet and DaemonSet controllers: each
//! revision `<owner>-<hash>` holds the pod template as a strategic merge patch (what
//! `kubectl rollout undo` applies back to the owner), a monotonically increasing `revision`,
//! the owner's controller reference and the `controller-revision-hash` label.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::ControllerError;

/// The label naming the revision a pod (or a revision) belongs to.
pub(crate) const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The characters upstream's `rand.SafeEncodeString` maps into (no vowels, no look-alikes).
const SAFE_ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The owner a history belongs to.
pub(crate) struct Owner<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub reference: OwnerReference,
    pub template: &'a PodTemplateSpec,
    /// Annotations copied onto new revisions (DaemonSets copy theirs, so `kubectl rollout
    /// history` shows `kubernetes.io/change-cause`).
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The revisions an owner's reconcile works with.
pub(crate) struct Revisions {
    /// Every revision the owner controls, sorted by `revision` (oldest first).
    pub all: Vec<ControllerRevision>,
    /// The revision the owner is rolling from (status.currentRevision, else `update`).
    pub current: ControllerRevision,
    /// The revision matching the owner's template now.
    pub update: ControllerRevision,
    /// The collision count after creating `update` (store it in the owner's status).
    pub collision_count: i32,
}

/// The revision data for `template`: `{"spec": {"template": {..., "$patch": "replace"}}}`.
pub(crate) fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision's data holds.
pub(crate) fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The revision's `controller-revision-hash` label (its name suffix).
pub(crate) fn hash_of(revision: &ControllerRevision) -> String {
    revision
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .cloned()
        .unwrap_or_default()
}

/// FNV-1 (32 bit) over the data's JSON and the collision count, safe-encoded as upstream's
/// `HashControllerRevision` does.
pub(crate) fn hash_data(data: &Value, collision_count: i32) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let raw = serde_json::to_vec(data).unwrap_or_default();
    let probe = collision_count.to_string();
    for b in raw.iter().chain(probe.as_bytes()) {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(*b);
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE_ALPHANUMS[usize::from(b) % SAFE_ALPHANUMS.len()] as char)
        .collect()
}

/// The revision name for `owner` and `hash` (the owner name cut so the name fits).
pub(crate) fn revision_name(owner: &str, hash: &str) -> String {
    let prefix: String = owner.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// Whether two revisions carry the same template.
fn same_data(a: &ControllerRevision, data: &Value) -> bool {
    a.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// The owner's revisions (controlled by `owner_uid`), oldest first.
pub(crate) async fn list(
    client: &kube::Client,
    namespace: &str,
    owner_uid: &str,
) -> Result<Vec<ControllerRevision>, ControllerError> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let mut all: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.metadata.deletion_timestamp.is_none()
                && mini_runtime::owner::is_controlled_by(&r.metadata, owner_uid)
        })
        .collect();
    all.sort_by(|a, b| {
        (a.revision, a.metadata.name.as_deref()).cmp(&(b.revision, b.metadata.name.as_deref()))
    });
    Ok(all)
}

/// Finds or creates the revision for the owner's template (bumping an older equal revision to
/// the newest number, as a rollback does), and resolves the current revision by name.
pub(crate) async fn sync(
    client: &kube::Client,
    owner: &Owner<'_>,
    current_name: Option<&str>,
    collision_count: i32,
) -> Result<Revisions, ControllerError> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), owner.namespace);
    let mut all = list(client, owner.namespace, &owner.reference.uid).await?;
    let data = template_patch(owner.template);
    let next = all.last().map_or(1, |r| r.revision + 1);
    let mut collision_count = collision_count;
    let equal: Vec<usize> = (0..all.len())
        .filter(|i| same_data(&all[*i], &data))
        .collect();
    let update = match equal.last() {
        Some(&i) if i + 1 == all.len() => all[i].clone(),
        Some(&i) => {
            let name = all[i].metadata.name.clone().unwrap_or_default();
            let patch = json!({"revision": next});
            let bumped = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            all[i] = bumped.clone();
            bumped
        }
        None => {
            let created = create(&api, owner, &data, next, &mut collision_count).await?;
            all.push(created.clone());
            created
        }
    };
    all.sort_by(|a, b| {
        (a.revision, a.metadata.name.as_deref()).cmp(&(b.revision, b.metadata.name.as_deref()))
    });
    let current = current_name
        .filter(|n| !n.is_empty())
        .and_then(|n| all.iter().find(|r| r.metadata.name.as_deref() == Some(n)))
        .cloned()
        .unwrap_or_else(|| update.clone());
    Ok(Revisions {
        all,
        current,
        update,
        collision_count,
    })
}

/// Creates the revision, probing past hash collisions with a different template.
async fn create(
    api: &Api<ControllerRevision>,
    owner: &Owner<'_>,
    data: &Value,
    revision: i64,
    collision_count: &mut i32,
) -> Result<ControllerRevision, ControllerError> {
    for _ in 0..100 {
        let hash = hash_data(data, *collision_count);
        let name = revision_name(owner.name, &hash);
        let mut labels: BTreeMap<String, String> = owner
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(REVISION_HASH_LABEL.into(), hash.clone());
        let cr = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(owner.namespace.to_string()),
                labels: Some(labels),
                annotations: owner.annotations.clone(),
                owner_references: Some(vec![owner.reference.clone()]),
                ..Default::default()
            },
            data: Some(RawExtension(data.clone())),
            revision,
        };
        match api.create(&PostParams::default(), &cr).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(&name).await?;
                if same_data(&existing, data)
                    && mini_runtime::owner::is_controlled_by(
                        &existing.metadata,
                        &owner.reference.uid,
                    )
                {
                    return Ok(existing);
                }
                *collision_count += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControllerError::Other(format!(
        "too many hash collisions creating a revision for {}",
        owner.name
    )))
}

/// Deletes the oldest revisions beyond `limit`, never one in `live` (current, update, or
/// referenced by an existing pod's hash label).
pub(crate) async fn truncate(
    client: &kube::Client,
    namespace: &str,
    all: &[ControllerRevision],
    live: &[String],
    limit: i32,
) -> Result<(), ControllerError> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let history: Vec<&ControllerRevision> = all
        .iter()
        .filter(|r| {
            let name = r.metadata.name.clone().unwrap_or_default();
            !live.contains(&name) && !live.contains(&hash_of(r))
        })
        .collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if history.len() <= limit {
        return Ok(());
    }
    for r in &history[..history.len() - limit] {
        let name = r.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn template_patch_round_trips_and_replaces() {
        let data = template_patch(&template("nginx:1"));
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let cr = ControllerRevision {
            data: Some(RawExtension(data)),
            ..Default::default()
        };
        assert_eq!(template_of(&cr), Some(template("nginx:1")));
    }

    #[test]
    fn hash_data_differs_by_template_and_collision_count() {
        let a = template_patch(&template("nginx:1"));
        let b = template_patch(&template("nginx:2"));
        assert_eq!(hash_data(&a, 0), hash_data(&a, 0));
        assert_ne!(hash_data(&a, 0), hash_data(&b, 0));
        assert_ne!(hash_data(&a, 0), hash_data(&a, 1));
        assert!(hash_data(&a, 0)
            .bytes()
            .all(|c| SAFE_ALPHANUMS.contains(&c)));
    }
}
