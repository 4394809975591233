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
use crate::extension::{catalog_error, ContainerCommit, RepositoryEntry, TagEntry, REGISTRY_GROUP};
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
    let verb = ctx.info.verb.as_str();
    if ctx.info.subresource.is_some() || !matches!(verb, "get" | "list" | "delete") {
        return Err(ApiError::method_not_allowed(format!(
            "{} are read and deleted here; push images with an OCI client (podman, skopeo, mini images push) to /v2/",
            ctx.res.plural
        )));
    }
    let Some(catalog) = ctx.server.image_catalog() else {
        // no registry on this server (`--disable registry`): there are no images, so a
        // namespace being deleted is not held up by them
        if verb == "list" {
            return Ok(body::json(
                StatusCode::OK,
                &json!({"kind": ctx.res.list_kind(), "apiVersion": format!("{REGISTRY_GROUP}/v1"),
                        "metadata": {}, "items": []}),
            ));
        }
        let mut e = ApiError::not_found(REGISTRY_GROUP, &ctx.res.plural, ctx.name());
        e.message = format!(
            "{}: the image registry is not running on this server (--disable registry)",
            e.message
        );
        return Err(e);
    };
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
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
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
        return Ok(crate::handlers::respond_object(
            ctx,
            StatusCode::OK,
            &object,
        ));
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

/// The namespace a repository belongs to: its first path component, unless that names a host
/// (a mirrored upstream repository, cluster scope).
pub(crate) fn repository_namespace(repository: &str) -> Option<&str> {
    let first = repository.split('/').next().unwrap_or_default();
    if first.contains('.') || first.contains(':') || first == "localhost" {
        None
    } else {
        Some(first)
    }
}

fn header_text(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `POST pods/<name>/commit?container=&repository=&tag=`: the node agent diffs the container's
/// filesystem against its image; the layer streams from the agent straight into the registry
/// as a new image `repository:tag`. Needs `create pods/commit` (checked by the router) and push
/// rights (`create` on `repositories`) where the image goes.
pub(crate) async fn commit_container(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let Some(catalog) = ctx.server.image_catalog() else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            "the image registry is not running on this server",
        ));
    };
    let repository = ctx.query.get("repository").unwrap_or_default().to_string();
    let tag = ctx.query.get("tag").unwrap_or_default().to_string();
    if repository.is_empty() || tag.is_empty() {
        return Err(ApiError::bad_request(
            "commit needs ?repository=<namespace>/<name>&tag=<tag> for the new image",
        ));
    }
    let target_namespace = repository_namespace(&repository);
    for verb in ["create", "update"] {
        if !ctx
            .server
            .may(
                ctx.user,
                verb,
                REGISTRY_GROUP,
                "repositories",
                target_namespace,
                None,
            )
            .await
        {
            return Err(ApiError::forbidden(format!(
                "User \"{}\" cannot {verb} resource \"repositories\" in API group \"{REGISTRY_GROUP}\" {}",
                ctx.user.name,
                match target_namespace {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".to_string(),
                }
            )));
        }
    }
    let (pod, addr) = crate::nodeproxy::pod_and_node(ctx).await?;
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "cannot commit a container of pod {} in phase {phase:?}: it must be Running",
            ctx.name()
        )));
    }
    let container = crate::nodeproxy::pick_container(&pod, ctx.query.get("container"))?;
    let ns = ctx.namespace().unwrap_or("default");
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("namespace", ns)
        .append_pair("pod", ctx.name())
        .append_pair("container", &container)
        .finish();
    let path = format!("/commit?{query}");
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| ApiError::internal(format!("cannot build the node request: {e}")))?;
    let resp = crate::nodeproxy::send(ctx.server, addr, req).await?;
    let status = resp.status();
    if !status.is_success() {
        use http_body_util::BodyExt;
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(ApiError::new(
            if status.is_client_error() { 400 } else { 502 },
            if status.is_client_error() {
                "BadRequest"
            } else {
                "InternalError"
            },
            format!("the node agent could not commit container {container}: {text}"),
        ));
    }
    let headers = resp.headers();
    let Some(image) = header_text(headers, "mini-image-ref") else {
        return Err(ApiError::internal(
            "the node agent's commit answer names no image (Mini-Image-Ref)",
        ));
    };
    let Some(diff_id) = header_text(headers, "mini-diff-id") else {
        return Err(ApiError::internal(
            "the node agent's commit answer has no layer diff id (Mini-Diff-Id)",
        ));
    };
    let commit = ContainerCommit {
        image,
        image_digest: header_text(headers, "mini-image-digest"),
        diff_id,
        layer_digest: header_text(headers, "mini-layer-digest"),
        layer_size: header_text(headers, "content-length").and_then(|v| v.parse().ok()),
        target_repository: repository.clone(),
        target_tag: tag.clone(),
    };
    use http_body_util::BodyExt;
    let layer: Body = resp
        .into_body()
        .map_err(std::io::Error::other)
        .boxed_unsync();
    let digest = catalog
        .commit(commit, layer)
        .await
        .map_err(|e| ApiError::bad_request(format!("committing into {repository}:{tag}: {e}")))?;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "code": 201,
                "message": format!("{repository}:{tag}@{digest}"),
                "details": {"name": ctx.name(), "kind": "pods",
                            "causes": [{"field": "digest", "message": digest}]}}),
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
        assert_eq!(
            repository_object_name("default/app", Some("default")),
            "app"
        );
    }

    #[test]
    fn repository_namespace_hosts_are_cluster_scope() {
        assert_eq!(repository_namespace("default/app"), Some("default"));
        assert_eq!(repository_namespace("docker.io/library/busybox"), None);
        assert_eq!(repository_namespace("localhost/x"), None);
        assert_eq!(repository_namespace("10.0.0.1:6443/x"), None);
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
