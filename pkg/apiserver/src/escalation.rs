//! RBAC escalation prevention, as upstream's `rbac/rolebinding|role/policybased` storage: a
//! (Cluster)RoleBinding may be written only by whoever has `bind` on its role or already holds
//! every permission of that role in the binding's scope; a (Cluster)Role only by whoever has
//! `escalate` on it or holds all of its rules (and an `aggregationRule` needs full authority).

use mini_api::ApiError;
use mini_rbac::{Decision, RequestAttributes};
use serde_json::Value;

use crate::handlers::Ctx;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Refuses (403) a write of `new` (replacing `old` when an update) that would grant `ctx.user`
/// permissions it does not hold. Anything but RBAC roles and bindings passes.
pub(crate) async fn check(ctx: &Ctx<'_>, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
    if ctx.res.group != RBAC_GROUP
        || ctx
            .user
            .groups
            .iter()
            .any(|g| g == mini_rbac::SYSTEM_MASTERS)
    {
        return Ok(());
    }
    let namespace = if ctx.res.namespaced {
        ctx.info.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    match ctx.res.kind.as_str() {
        "RoleBinding" | "ClusterRoleBinding" => {
            if old
                .is_some_and(|o| o["roleRef"] == new["roleRef"] && o["subjects"] == new["subjects"])
            {
                return Ok(());
            }
            let role_kind = new["roleRef"]["kind"].as_str().unwrap_or_default();
            let role_name = new["roleRef"]["name"].as_str().unwrap_or_default();
            let bind = RequestAttributes {
                verb: "bind".into(),
                resource_request: true,
                api_group: RBAC_GROUP.into(),
                resource: if role_kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                }
                .into(),
                namespace: namespace.clone(),
                name: role_name.into(),
                ..Default::default()
            };
            if allowed(ctx, &bind).await? {
                return Ok(());
            }
            let policy = crate::auth::policy(ctx.server).await?;
            let rules = match role_kind {
                "Role" => policy
                    .roles
                    .iter()
                    .find(|r| {
                        r["metadata"]["name"] == role_name
                            && r["metadata"]["namespace"] == namespace.as_str()
                    })
                    .map(|r| r["rules"].as_array().cloned().unwrap_or_default()),
                _ => mini_rbac::effective_cluster_role_rules(&policy.cluster_roles, role_name),
            };
            let Some(rules) = rules else {
                let kind = if role_kind == "Role" {
                    "role"
                } else {
                    "clusterrole"
                };
                return Err(refused(
                    ctx,
                    name,
                    format!("{kind}.{RBAC_GROUP} \"{role_name}\" not found"),
                ));
            };
            confirm_no_escalation(ctx, name, &rules, &namespace).await
        }
        "Role" | "ClusterRole" => {
            if old.is_some_and(|o| {
                o["rules"] == new["rules"] && o["aggregationRule"] == new["aggregationRule"]
            }) {
                return Ok(());
            }
            let escalate = RequestAttributes {
                verb: "escalate".into(),
                resource_request: true,
                api_group: RBAC_GROUP.into(),
                resource: ctx.res.plural.clone(),
                namespace: namespace.clone(),
                name: name.into(),
                ..Default::default()
            };
            if allowed(ctx, &escalate).await? {
                return Ok(());
            }
            if new.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                let everything = [serde_json::json!({
                    "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]
                })];
                if confirm_no_escalation(ctx, name, &everything, "")
                    .await
                    .is_err()
                {
                    return Err(refused(
                        ctx,
                        name,
                        "must have cluster-admin privileges to use the aggregationRule".into(),
                    ));
                }
            }
            let rules = new["rules"].as_array().cloned().unwrap_or_default();
            confirm_no_escalation(ctx, name, &rules, &namespace).await
        }
        _ => Ok(()),
    }
}

async fn allowed(ctx: &Ctx<'_>, attrs: &RequestAttributes) -> Result<bool, ApiError> {
    Ok(matches!(
        crate::auth::decide(ctx.server, ctx.user, attrs).await?,
        Decision::Allow
    ))
}

/// Every permission `rules` grant, one verb/group/resource/name at a time (upstream's
/// `BreakdownRule`), in `namespace`.
pub(crate) fn breakdown(rules: &[Value], namespace: &str) -> Vec<RequestAttributes> {
    let list = |rule: &Value, key: &str| -> Vec<String> {
        rule[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for rule in rules {
        let verbs = list(rule, "verbs");
        let names = list(rule, "resourceNames");
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for group in list(rule, "apiGroups") {
            for resource in list(rule, "resources") {
                let (resource, subresource) = match resource.split_once('/') {
                    Some((r, s)) => (r.to_string(), s.to_string()),
                    None => (resource.clone(), String::new()),
                };
                for verb in &verbs {
                    for name in &names {
                        out.push(RequestAttributes {
                            verb: verb.clone(),
                            resource_request: true,
                            api_group: group.clone(),
                            resource: resource.clone(),
                            subresource: subresource.clone(),
                            namespace: namespace.to_string(),
                            name: name.clone(),
                            path: String::new(),
                        });
                    }
                }
            }
        }
        for url in list(rule, "nonResourceURLs") {
            for verb in &verbs {
                out.push(RequestAttributes {
                    verb: verb.clone(),
                    resource_request: false,
                    path: url.clone(),
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// 403 unless `ctx.user` holds every permission of `rules` in `namespace` ("" = cluster-wide).
async fn confirm_no_escalation(
    ctx: &Ctx<'_>,
    name: &str,
    rules: &[Value],
    namespace: &str,
) -> Result<(), ApiError> {
    let mut missing = Vec::new();
    for attrs in breakdown(rules, namespace) {
        if !allowed(ctx, &attrs).await? {
            missing.push(describe(&attrs));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.dedup();
    let shown: Vec<String> = missing.iter().take(10).cloned().collect();
    let more = if missing.len() > shown.len() {
        format!(" (and {} more)", missing.len() - shown.len())
    } else {
        String::new()
    };
    Err(refused(
        ctx,
        name,
        format!(
            "user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held: {}{more}",
            ctx.user.name,
            ctx.user.groups,
            shown.join(", ")
        ),
    ))
}

fn describe(a: &RequestAttributes) -> String {
    if !a.resource_request {
        return format!(
            "{{NonResourceURLs:[\"{}\"], Verbs:[\"{}\"]}}",
            a.path, a.verb
        );
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let names = if a.name.is_empty() {
        String::new()
    } else {
        format!(", ResourceNames:[\"{}\"]", a.name)
    };
    format!(
        "{{APIGroups:[\"{}\"], Resources:[\"{resource}\"]{names}, Verbs:[\"{}\"]}}",
        a.api_group, a.verb
    )
}

fn refused(ctx: &Ctx<'_>, name: &str, reason: String) -> ApiError {
    let mut e = ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: {reason}",
        ctx.res.qualified_plural()
    ));
    e.group = ctx.res.group.clone();
    e.kind = ctx.res.plural.clone();
    e.name = name.to_string();
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn breakdown_rule_yields_one_permission_per_verb_group_resource_name() {
        let rules = [json!({"verbs": ["get", "list"], "apiGroups": [""],
            "resources": ["pods", "pods/log"], "resourceNames": ["a"]})];
        let all = breakdown(&rules, "ns");
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|a| a.namespace == "ns" && a.name == "a"));
        assert!(all
            .iter()
            .any(|a| a.resource == "pods" && a.subresource == "log" && a.verb == "list"));
    }

    #[test]
    fn breakdown_non_resource_urls_are_paths() {
        let rules = [json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]})];
        let all = breakdown(&rules, "");
        assert_eq!(all.len(), 1);
        assert!(!all[0].resource_request);
        assert_eq!(all[0].path, "/healthz");
    }
}
