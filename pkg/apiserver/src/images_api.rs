//! The `registry.mini.dev/v1` resources: the embedded registry's repositories (`Repository`)
//! and tags (`ImageTag`), listed and deleted through the Kubernetes API so `kubectl get` shows
//! them with size and last push time. Pushing goes through the OCI API under `/v2/`.
//!
//! Object names: a repository `team-a/web/api` is `web.api` in namespace `team-a`; a mirrored
//! upstream repository (`docker.io/library/busybox`) has no namespace and is named
//! `docker.io.library.busybox`; a tag is `<repository name>:<tag>`.

use http::{Response, StatusCode};
use mini_api::ApiError;
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::extension::{catalog_error, RepositoryEntry, TagEntry, REGISTRY_GROUP};
use crate::handlers::Ctx;

/// The object name of a repository.
pub(crate) fn repository_object_name(repository: &str, namespace: Option<&str>) -> String {
    let path = match namespace {
        Some(ns) => repository
            .strip_prefix(ns)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(repository),
        None => repository,
    };
    path.replace('/', ".")
}

fn timestamp(t: &Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map(|t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn metadata(name: String, namespace: &Option<String>, created: &Value) -> Value {
    let mut m = json!({"name": name});
    if let Some(ns) = namespace {
        m["namespace"] = Value::from(ns.clone());
    }
    if !created.is_null() {
        m["creationTimestamp"] = created.clone();
    }
    m
}

pub(crate) fn repository_object(r: &RepositoryEntry) -> Value {
    let pushed = timestamp(&r.last_push);
    json!({
        "kind": "Repository",
        "apiVersion": format!("{REGISTRY_GROUP}/v1"),
        "metadata": metadata(repository_object_name(&r.repository, r.namespace.as_deref()), &r.namespace, &pushed),
        "spec": {"repository": r.repository},
        "status": {"tags": r.tags, "size": r.size, "lastPush": pushed},
    })
}

pub(crate) fn tag_object(t: &TagEntry) -> Value {
    let pushed = timestamp(&t.pushed);
    let name = format!(
        "{}:{}",
        repository_object_name(&t.repository, t.namespace.as_deref()),
        t.tag
    );
    json!({
        "kind": "ImageTag",
        "apiVersion": format!("{REGISTRY_GROUP}/v1"),
        "metadata": metadata(name, &t.namespace, &pushed),
        "spec": {"repository": t.repository, "tag": t.tag},
        "status": {"digest": t.digest, "mediaType": t.media_type, "size": t.size, "pushed": pushed},
    })
}

/// GET, LIST and DELETE of `repositories` and `imagetags`.
pub(crate) async fn handle(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let Some(catalog) = ctx.server.image_catalog() else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            "the image registry is not running on this server",
        ));
    };
    let verb = ctx.info.verb.as_str();
    if ctx.info.subresource.is_some() || !matches!(verb, "get" | "list" | "delete") {
        return Err(ApiError::method_not_allowed(format!(
            "{} are read and deleted here; push images with an OCI client (podman, skopeo, mini images push) to /v2/",
            ctx.res.plural
        )));
    }
    let namespace = ctx.namespace();
    let tags_resource = ctx.res.plural == "imagetags";
    let mut objects: Vec<(Value, Option<TagEntry>, Option<RepositoryEntry>)> = if tags_resource {
        catalog
            .tags(namespace)
            .await
            .map_err(catalog_error)?
            .into_iter()
            .map(|t| (tag_object(&t), Some(t), None))
            .collect()
    } else {
        catalog
            .repositories(namespace)
            .await
            .map_err(catalog_error)?
            .into_iter()
            .map(|r| (repository_object(&r), None, Some(r)))
            .collect()
    };
    if verb == "list" {
        let mut items: Vec<Value> = objects.into_iter().map(|(o, _, _)| o).collect();
        items.sort_by(|a, b| {
            let key = |o: &Value| {
                (
                    o["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
                    o["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
        if crate::table::wants_table(ctx.headers) {
            return Ok(body::json(
                StatusCode::OK,
                &crate::table::table(ctx.res, &items, ctx.query, "", false),
            ));
        }
        return Ok(body::json(
            StatusCode::OK,
            &json!({"kind": ctx.res.list_kind(), "apiVersion": format!("{REGISTRY_GROUP}/v1"),
                    "metadata": {}, "items": items}),
        ));
    }
    let name = ctx.name();
    let Some(index) = objects
        .iter()
        .position(|(o, _, _)| o["metadata"]["name"] == name)
    else {
        return Err(ApiError::not_found(REGISTRY_GROUP, &ctx.res.plural, name));
    };
    let (object, tag, repository) = objects.swap_remove(index);
    if verb == "get" {
        return Ok(crate::handlers::respond_object(ctx, StatusCode::OK, &object));
    }
    // delete: a tag, or every tag of a repository
    if let Some(t) = tag {
        catalog
            .delete_tag(&t.repository, &t.tag)
            .await
            .map_err(catalog_error)?;
    } else if let Some(r) = repository {
        let tags = catalog.tags(namespace).await.map_err(catalog_error)?;
        for t in tags.iter().filter(|t| t.repository == r.repository) {
            catalog
                .delete_tag(&t.repository, &t.tag)
                .await
                .map_err(catalog_error)?;
        }
    }
    Ok(body::json(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": REGISTRY_GROUP, "kind": ctx.res.plural}}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_object_name_namespaced_drops_namespace_and_dots_slashes() {
        assert_eq!(
            repository_object_name("team-a/web/api", Some("team-a")),
            "web.api"
        );
        assert_eq!(repository_object_name("default/app", Some("default")), "app");
    }

    #[test]
    fn repository_object_name_mirrored_keeps_host() {
        assert_eq!(
            repository_object_name("docker.io/library/busybox", None),
            "docker.io.library.busybox"
        );
    }

    #[test]
    fn tag_object_has_name_size_and_push_time() {
        let t = TagEntry {
            repository: "default/app".into(),
            namespace: Some("default".into()),
            tag: "v1".into(),
            digest: "sha256:ab".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 42,
            pushed: Some(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
        };
        let o = tag_object(&t);
        assert_eq!(o["metadata"]["name"], "app:v1");
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["status"]["size"], 42);
        assert_eq!(o["status"]["pushed"], "2023-11-14T22:13:20Z");
    }
}
