//! Controller owner references: building them and finding an object's controller.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

/// The ownerReference a controller puts on what it creates (`controller` and
/// `blockOwnerDeletion` true, as upstream).
pub fn controller_ref<K>(owner: &K) -> OwnerReference
where
    K: Resource<DynamicType = ()>,
{
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    #[test]
    fn controller_ref_of_deployment_is_controller_and_blocks_deletion() {
        let mut d = Deployment::default();
        d.metadata.name = Some("web".into());
        d.metadata.uid = Some("u1".into());
        let r = controller_ref(&d);
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.name.as_str()),
            ("apps/v1", "Deployment", "web")
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
        let meta = ObjectMeta {
            owner_references: Some(vec![r]),
            ..Default::default()
        };
        assert!(is_controlled_by(&meta, "u1"));
        assert!(!is_controlled_by(&meta, "u2"));
    }
}
