//! Request-scoped resources and subresources: access and token reviews, `scale`, pod
//! `binding` and `eviction`.

use http::{Response, StatusCode};
use mini_api::{meta, ApiError, LabelSelector};
use mini_rbac::{Decision, RequestAttributes, UserInfo};
use serde_json::{json, Value};

use crate::admission::WriteMode;
use crate::body::{self, Body};
use crate::handlers::{commit_update, read, Ctx};

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn attributes_from_spec(spec: &Value) -> RequestAttributes {
    if let Some(r) = spec.get("resourceAttributes") {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        RequestAttributes {
            verb: s("verb"),
            resource_request: true,
            api_group: s("group"),
            resource: s("resource"),
            subresource: s("subresource"),
            namespace: s("namespace"),
            name: s("name"),
            path: String::new(),
        }
    } else {
        let n = &spec["nonResourceAttributes"];
        RequestAttributes {
            verb: n["verb"].as_str().unwrap_or_default().to_string(),
            resource_request: false,
            path: n["path"].as_str().unwrap_or_default().to_string(),
            ..Default::default()
        }
    }
}

async fn access_status(
    ctx: &Ctx<'_>,
    user: &UserInfo,
    attrs: &RequestAttributes,
) -> Result<Value, ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(json!({"allowed": true}));
    }
    Ok(match crate::auth::decide(ctx.server, user, attrs).await? {
        Decision::Allow => json!({"allowed": true, "reason": "RBAC: allowed by a binding"}),
        Decision::Deny { reason } => {
            let mut s = json!({"allowed": false});
            if !reason.is_empty() {
                s["reason"] = json!(reason);
            }
            s
        }
    })
}

/// POST of a review resource: answered from the request, never stored.
pub async fn create(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let ct = body::content_type(ctx.headers);
    let mut obj = body::decode_object(&ct, ctx.body)?;
    obj["apiVersion"] = json!(ctx.res.api_version());
    obj["kind"] = json!(ctx.res.kind);
    let spec = obj["spec"].clone();
    let status = match ctx.res.kind.as_str() {
        "SelfSubjectAccessReview" => {
            access_status(ctx, ctx.user, &attributes_from_spec(&spec)).await?
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let user = UserInfo {
                name: spec["user"].as_str().unwrap_or_default().to_string(),
                groups: strings(&spec["groups"]),
            };
            let mut attrs = attributes_from_spec(&spec);
            if ctx.res.kind == "LocalSubjectAccessReview" {
                attrs.namespace = ctx.info.namespace.clone().unwrap_or_default();
            }
            access_status(ctx, &user, &attrs).await?
        }
        "SelfSubjectRulesReview" => {
            let ns = spec["namespace"].as_str().unwrap_or_default();
            let policy = crate::auth::policy(ctx.server).await?;
            let (resource_rules, non_resource_rules) = mini_rbac::rules_for(&policy, ctx.user, ns);
            json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
        }
        "SelfSubjectReview" => {
            json!({"userInfo": {"username": ctx.user.name, "groups": ctx.user.groups}})
        }
        "TokenReview" => {
            let token = spec["token"].as_str().unwrap_or_default();
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = format!("Bearer {token}").parse() {
                headers.insert(http::header::AUTHORIZATION, v);
            }
            match crate::auth::authenticate(ctx.server, &headers, None).await {
                Ok(u) => {
                    json!({"authenticated": true, "user": {"username": u.name, "groups": u.groups}})
                }
                Err(_) => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        other => return Err(ApiError::internal(format!("no review handler for {other}"))),
    };
    obj["status"] = status;
    if obj.get("metadata").is_none() {
        obj["metadata"] = json!({});
    }
    Ok(body::json(StatusCode::CREATED, &obj))
}

/// Reads a dotted path like `.spec.replicas`.
fn at_path<'a>(obj: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.')
        .split('.')
        .fold(obj, |v, seg| &v[seg])
}

fn set_path(obj: &mut Value, path: &str, value: Value) {
    let segs: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = obj;
    for seg in &segs[..segs.len() - 1] {
        if !cur[*seg].is_object() {
            cur[*seg] = json!({});
        }
        cur = &mut cur[*seg];
    }
    cur[segs[segs.len() - 1]] = value;
}

/// The autoscaling/v1 Scale view of an object.
fn scale_of(ctx: &Ctx<'_>, obj: &Value) -> Value {
    let (spec_path, status_path, selector) =
        match ctx.res.custom.as_ref().and_then(|c| c.scale.as_ref()) {
            Some(s) => (
                s.spec_replicas.clone(),
                s.status_replicas.clone(),
                s.label_selector
                    .as_ref()
                    .and_then(|p| at_path(obj, p).as_str().map(str::to_string)),
            ),
            None => {
                let sel = &obj["spec"]["selector"];
                let selector = if ctx.res.kind == "ReplicationController" {
                    sel.as_object().map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                } else {
                    LabelSelector::from_json(sel).ok().map(|s| s.to_query())
                };
                (
                    ".spec.replicas".to_string(),
                    ".status.replicas".to_string(),
                    selector,
                )
            }
        };
    let m = &obj["metadata"];
    let mut status = json!({"replicas": at_path(obj, &status_path).as_i64().unwrap_or(0)});
    if let Some(s) = selector {
        status["selector"] = json!(s);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": at_path(obj, &spec_path).as_i64().unwrap_or(0)},
        "status": status,
    })
}

pub async fn scale_get(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let (_, obj) = read(ctx).await?;
    Ok(body::json(StatusCode::OK, &scale_of(ctx, &obj)))
}

/// PUT or PATCH of `scale`: computes the new Scale, then writes its replicas to the parent.
pub async fn scale_write(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let ct = body::content_type(ctx.headers);
    for _ in 0..16 {
        let (kv, obj) = read(ctx).await?;
        let current = scale_of(ctx, &obj);
        let wanted = if ctx.info.verb == "update" {
            body::decode_object(&ct, ctx.body)?
        } else {
            let patch = body::decode_patch(&ct, ctx.body)?;
            match ct.as_str() {
                "application/json-patch+json" => mini_patch::json_patch(&current, &patch)
                    .map_err(crate::handlers::patch_error)?,
                _ => mini_patch::merge_patch(&current, &patch),
            }
        };
        if let Some(rv) = wanted["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            if rv != kv.mod_revision.to_string() {
                return Err(ctx.conflict());
            }
        }
        let Some(replicas) = wanted["spec"]["replicas"].as_i64() else {
            return Err(ApiError::bad_request("spec.replicas is required"));
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                ctx.name(),
                vec![mini_api::Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                    field: "spec.replicas".into(),
                }],
            ));
        }
        let spec_path = ctx
            .res
            .custom
            .as_ref()
            .and_then(|c| c.scale.as_ref())
            .map(|s| s.spec_replicas.clone())
            .unwrap_or_else(|| ".spec.replicas".into());
        let mut new = obj.clone();
        set_path(&mut new, &spec_path, json!(replicas));
        let new = crate::admission::prepare_update(ctx.res, &obj, new, WriteMode::Main);
        match commit_update(ctx, &kv, &obj, new, WriteMode::Main, None).await? {
            Ok(saved) => return Ok(body::json(StatusCode::OK, &scale_of(ctx, &saved))),
            Err(()) => continue,
        }
    }
    Err(ctx.conflict())
}

/// `pods/binding`: sets `spec.nodeName` once.
pub async fn bind_pod(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let ct = body::content_type(ctx.headers);
    let binding = body::decode_object(&ct, ctx.body)?;
    let node = binding["target"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            ctx.name(),
            vec![mini_api::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "target.name".into(),
            }],
        ));
    }
    for _ in 0..16 {
        let (kv, pod) = read(ctx).await?;
        if pod["metadata"].get("deletionTimestamp").is_some() {
            return Err(ApiError::conflict("", "pods", ctx.name()).with_message(format!("Operation cannot be fulfilled on pods/binding \"{}\": pod {} is being deleted, cannot be assigned to a host", ctx.name(), ctx.name())));
        }
        if let Some(existing) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict("", "pods", ctx.name()).with_message(format!(
                "Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{existing}\"",
                ctx.name(), ctx.name()
            )));
        }
        let mut new = pod.clone();
        new["spec"]["nodeName"] = json!(node);
        let conds = new["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conds: Vec<Value> = conds
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()}));
        new["status"]["conditions"] = json!(conds);
        match commit_update(ctx, &kv, &pod, new, WriteMode::Status, None).await? {
            Ok(_) => {
                return Ok(body::json(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ));
            }
            Err(()) => continue,
        }
    }
    Err(ctx.conflict())
}

/// `pods/eviction`: deletes the pod with the eviction's delete options. PodDisruptionBudget
/// checks (429) need the disruption controller and arrive with it.
pub async fn evict_pod(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let ct = body::content_type(ctx.headers);
    let eviction = if ctx.body.is_empty() {
        json!({})
    } else {
        body::decode_object(&ct, ctx.body)?
    };
    if mini_nodeauthz::node_identity(ctx.user).is_some() {
        let (_, pod) = read(ctx).await?;
        let op = mini_nodeauthz::Operation::Create;
        crate::admission::node_restriction(ctx, op, Some(&pod), Some(&eviction)).await?;
    }
    check_disruption_budgets(ctx).await?;
    let opts = &eviction["deleteOptions"];
    let delete_body = if opts.is_object() {
        serde_json::to_vec(opts).unwrap_or_default()
    } else {
        Vec::new()
    };
    let bytes = bytes::Bytes::from(delete_body);
    let info = crate::request::RequestInfo {
        subresource: None,
        verb: "delete".into(),
        ..ctx.info.clone()
    };
    let dctx = Ctx {
        info: &info,
        body: &bytes,
        ..*ctx
    };
    let opts = crate::handlers::delete_options(&dctx)?;
    crate::handlers::delete_object(&dctx, &opts).await?;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// An eviction may proceed only while every PodDisruptionBudget selecting the pod allows a
/// disruption; the budget's `disruptionsAllowed` is taken (compare-and-swap) before the pod
/// is deleted, as upstream does. Otherwise 429, and `kubectl drain` retries.
async fn check_disruption_budgets(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    let (_, pod) = read(ctx).await?;
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed") | Some("Pending")
    ) {
        return Ok(());
    }
    let ns = ctx.info.namespace.clone().unwrap_or_default();
    let store = &ctx.server.inner.store;
    let prefix = format!("/registry/policy/poddisruptionbudgets/{ns}/");
    let page = store
        .list(&prefix, None, 0)
        .await
        .map_err(crate::handlers::store_error)?;
    let pod_ready = pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    for kv in page.items {
        let Ok(pdb) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let Ok(selector) = LabelSelector::from_json(&pdb["spec"]["selector"]) else {
            continue;
        };
        if pdb["spec"].get("selector").is_none()
            || selector.is_empty()
            || !selector.matches_object(&pod)
        {
            continue;
        }
        let name = pdb["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let status = &pdb["status"];
        let current = status["currentHealthy"].as_i64().unwrap_or(0);
        let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
        if !pod_ready && current >= desired {
            continue;
        }
        let observed = status["observedGeneration"].as_i64().unwrap_or(0);
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
        let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
        if observed < generation || allowed < 1 {
            let mut e = ApiError::too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                0,
            );
            e.causes.push(mini_api::Cause {
                reason: "DisruptionBudget".into(),
                message: format!("The disruption budget {name} needs {desired} healthy pods and has {current} currently"),
                field: String::new(),
            });
            return Err(e);
        }
        let mut updated = pdb.clone();
        updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
        let pod_name = ctx.name().to_string();
        updated["status"]["disruptedPods"][pod_name] = json!(meta::now_rfc3339());
        match store
            .update(
                &kv.key,
                meta::to_storage_bytes(&updated),
                Some(kv.mod_revision),
            )
            .await
        {
            Ok(_) => {}
            Err(mini_store::StoreError::Conflict { .. }) => {
                return Err(ApiError::too_many_requests(
                    "the disruption budget changed; retry the eviction",
                    0,
                ));
            }
            Err(e) => return Err(crate::handlers::store_error(e)),
        }
    }
    Ok(())
}
