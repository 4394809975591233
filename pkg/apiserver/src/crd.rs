//! CustomResourceDefinitions: accepted/established status, name checks, and keeping the
//! registry (and the stored custom objects) in step with the CRDs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mini_api::{meta, ApiError, Cause, Registry};
use serde_json::{json, Value};

use crate::handlers::Ctx;
use crate::{ApiServer, ApiServerError};

/// A new CRD is accepted and established at once (names are checked on create).
pub fn set_accepted_status(crd: &mut Value) {
    let now = meta::now_rfc3339();
    let names = crd["spec"]["names"].clone();
    let mut accepted = names.clone();
    if accepted.get("singular").is_none() {
        if let Some(kind) = names["kind"].as_str() {
            accepted["singular"] = json!(kind.to_lowercase());
        }
    }
    if accepted.get("listKind").is_none() {
        if let Some(kind) = names["kind"].as_str() {
            accepted["listKind"] = json!(format!("{kind}List"));
        }
    }
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    crd["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
}

/// A CRD's name must be `<plural>.<group>`, and its names must not clash with a served resource.
pub async fn check_crd_create(ctx: &Ctx<'_>, obj: &Value) -> Result<(), ApiError> {
    if !(ctx.res.group == "apiextensions.k8s.io" && ctx.res.kind == "CustomResourceDefinition") {
        return Ok(());
    }
    let name = meta::name(obj);
    let group = obj["spec"]["group"].as_str().unwrap_or_default();
    let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
    let invalid = |field: &str, message: String| {
        ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message,
                field: field.into(),
            }],
        )
    };
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = obj["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        return Err(invalid(
            "spec.versions",
            "Required value: must have exactly one version marked as storage version".into(),
        ));
    }
    if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        return Err(invalid(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    if ctx
        .server
        .registry()
        .resources()
        .iter()
        .any(|r| r.custom.is_none() && r.group == group && r.plural == plural)
    {
        return Err(invalid(
            "spec.names.plural",
            format!("Invalid value: \"{plural}\": conflicts with a built-in resource"),
        ));
    }
    Ok(())
}

impl ApiServer {
    /// Rebuilds the registry from the stored CRDs; removes the objects of CRDs that are gone.
    pub async fn reload_crds(&self) -> Result<(), ApiServerError> {
        let page = self
            .inner
            .store
            .list(
                "/registry/apiextensions.k8s.io/customresourcedefinitions/",
                None,
                0,
            )
            .await?;
        let crds: Vec<Value> = page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .filter(|c: &Value| c["metadata"].get("deletionTimestamp").is_none())
            .collect();
        let old = self.registry();
        let new = Registry::builtin().with_crds(crds.iter());
        let gone: Vec<String> = old
            .resources()
            .iter()
            .filter(|r| r.custom.is_some())
            .filter(|r| {
                !new.resources()
                    .iter()
                    .any(|n| n.group == r.group && n.plural == r.plural)
            })
            .map(|r| r.key_prefix())
            .collect();
        *self.inner.registry.write().expect("registry lock poisoned") = Arc::new(new);
        self.inner
            .registry_generation
            .fetch_add(1, Ordering::SeqCst);
        for prefix in gone {
            purge_prefix(self, &prefix).await?;
        }
        Ok(())
    }
}

/// Deletes every key under `prefix` (custom objects of a deleted CRD).
async fn purge_prefix(server: &ApiServer, prefix: &str) -> Result<(), ApiServerError> {
    loop {
        let page = server.inner.store.list(prefix, None, 500).await?;
        if page.items.is_empty() {
            return Ok(());
        }
        for kv in page.items {
            match server.inner.store.delete(&kv.key, None).await {
                Ok(_) | Err(mini_store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
