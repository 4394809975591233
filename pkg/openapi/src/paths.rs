//! The `paths` of a group-version document: upstream-shaped operations carrying
//! `x-kubernetes-action`, `x-kubernetes-group-version-kind` and the query parameters
//! kubectl probes for (notably `fieldValidation` on PATCH). No operation has a
//! `requestBody`, so kubectl falls back to its compiled-in types for patches.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// A group/version/kind triple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    pub(crate) fn new(group: &str, version: &str, kind: &str) -> Self {
        Gvk {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        }
    }

    /// The `x-kubernetes-group-version-kind` value of one kind.
    pub(crate) fn to_value(&self) -> Value {
        json!({"group": self.group, "version": self.version, "kind": self.kind})
    }
}

/// What the operations of a subresource look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubresourceShape {
    /// get/put/patch of an object (`status`, `scale`, `approval`, ...).
    ReadWrite,
    /// post only (`eviction`, `binding`, `token`).
    CreateOnly,
    /// a streaming/proxy endpoint (`log`, `exec`, `attach`, `portforward`, `proxy`).
    Connect,
}

/// One subresource of a resource, resolved to its kind and schema.
#[derive(Debug, Clone)]
pub(crate) struct Subresource {
    pub name: String,
    pub shape: SubresourceShape,
    pub gvk: Option<Gvk>,
    pub schema_name: Option<String>,
}

/// One resource, resolved to its schema.
#[derive(Debug, Clone)]
pub(crate) struct ResourcePaths<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub plural: &'a str,
    pub namespaced: bool,
    pub create_only: bool,
    pub gvk: Gvk,
    pub schema_name: String,
    pub subresources: Vec<Subresource>,
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub(crate) fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`, `StableExampleComV1`, like upstream's
/// operation ids.
fn operation_group_version(group: &str, version: &str) -> String {
    let mut out = String::new();
    if group.is_empty() {
        out.push_str("Core");
    } else {
        let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
        for part in trimmed.split(['.', '-']) {
            out.push_str(&capitalize(part));
        }
    }
    out.push_str(&capitalize(version));
    out
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": {"type": "string", "uniqueItems": true}
    })
}

fn query_param(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty, "uniqueItems": true}})
}

fn list_params() -> Vec<Value> {
    vec![
        query_param("allowWatchBookmarks", "boolean"),
        query_param("continue", "string"),
        query_param("fieldSelector", "string"),
        query_param("labelSelector", "string"),
        query_param("limit", "integer"),
        query_param("resourceVersion", "string"),
        query_param("resourceVersionMatch", "string"),
        query_param("sendInitialEvents", "boolean"),
        query_param("timeoutSeconds", "integer"),
        query_param("watch", "boolean"),
    ]
}

fn write_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "string"),
        query_param("fieldManager", "string"),
        query_param("fieldValidation", "string"),
    ]
}

fn patch_params() -> Vec<Value> {
    let mut params = write_params();
    params.push(query_param("force", "boolean"));
    params
}

fn delete_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "string"),
        query_param("gracePeriodSeconds", "integer"),
        query_param(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
        ),
        query_param("propagationPolicy", "string"),
    ]
}

fn schema_ref(schema_name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{schema_name}")})
}

fn object_response(description: &str, schema_name: Option<&str>) -> Value {
    match schema_name {
        Some(name) => json!({
            "description": description,
            "content": {"application/json": {"schema": schema_ref(name)}}
        }),
        None => json!({"description": description}),
    }
}

/// Which success statuses an operation answers with.
#[derive(Clone, Copy)]
enum Answers {
    /// 200 only (reads, deletes, connects).
    Ok,
    /// 200 and 201 (put, patch).
    OkCreated,
    /// 200, 201 and 202 (post).
    OkCreatedAccepted,
}

/// Builds one operation.
struct Op<'a> {
    action: &'a str,
    description: String,
    operation_id: String,
    gvk: Option<&'a Gvk>,
    params: Vec<Value>,
    response_schema: Option<&'a str>,
    answers: Answers,
}

impl Op<'_> {
    fn build(self, tag: &str) -> Value {
        let mut op = Map::new();
        op.insert("tags".into(), json!([tag]));
        op.insert("description".into(), Value::String(self.description));
        op.insert("operationId".into(), Value::String(self.operation_id));
        if !self.params.is_empty() {
            op.insert("parameters".into(), Value::Array(self.params));
        }
        let mut responses = Map::new();
        responses.insert("200".into(), object_response("OK", self.response_schema));
        if matches!(
            self.answers,
            Answers::OkCreated | Answers::OkCreatedAccepted
        ) {
            responses.insert(
                "201".into(),
                object_response("Created", self.response_schema),
            );
        }
        if matches!(self.answers, Answers::OkCreatedAccepted) {
            responses.insert(
                "202".into(),
                object_response("Accepted", self.response_schema),
            );
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        op.insert("responses".into(), Value::Object(responses));
        op.insert(
            "x-kubernetes-action".into(),
            Value::String(self.action.into()),
        );
        if let Some(gvk) = self.gvk {
            op.insert("x-kubernetes-group-version-kind".into(), gvk.to_value());
        }
        Value::Object(op)
    }
}

/// Adds to `paths` the operations of one resource and of its subresources.
pub(crate) fn add_resource(paths: &mut BTreeMap<String, Value>, r: &ResourcePaths<'_>) {
    let prefix = prefix(r.group, r.version);
    let gv = operation_group_version(r.group, r.version);
    let tag = gv.clone();
    let kind = &r.gvk.kind;
    let ns_segment = if r.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let ns_word = if r.namespaced { "Namespaced" } else { "" };
    let schema = Some(r.schema_name.as_str());

    let mut common = Vec::new();
    if r.namespaced {
        common.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    common.push(query_param("pretty", "string"));

    // The collection.
    let collection = format!("{prefix}{ns_segment}/{}", r.plural);
    let mut item = Map::new();
    item.insert(
        "post".into(),
        Op {
            action: "post",
            description: format!("create {}", article(kind)),
            operation_id: format!("create{gv}{ns_word}{kind}"),
            gvk: Some(&r.gvk),
            params: write_params(),
            response_schema: schema,
            answers: Answers::OkCreatedAccepted,
        }
        .build(&tag),
    );
    if !r.create_only {
        item.insert(
            "get".into(),
            Op {
                action: "list",
                description: format!("list or watch objects of kind {kind}"),
                operation_id: format!("list{gv}{ns_word}{kind}"),
                gvk: Some(&r.gvk),
                params: list_params(),
                response_schema: None,
                answers: Answers::Ok,
            }
            .build(&tag),
        );
        let mut params = delete_params();
        params.extend(list_params());
        item.insert(
            "delete".into(),
            Op {
                action: "deletecollection",
                description: format!("delete collection of {kind}"),
                operation_id: format!("deletecollection{gv}{ns_word}{kind}"),
                gvk: Some(&r.gvk),
                params,
                response_schema: None,
                answers: Answers::Ok,
            }
            .build(&tag),
        );
    }
    item.insert("parameters".into(), Value::Array(common.clone()));
    paths.insert(collection, Value::Object(item));

    if r.create_only {
        return;
    }

    // The list across all namespaces.
    if r.namespaced {
        let mut item = Map::new();
        item.insert(
            "get".into(),
            Op {
                action: "list",
                description: format!("list or watch objects of kind {kind}"),
                operation_id: format!("list{gv}{kind}ForAllNamespaces"),
                gvk: Some(&r.gvk),
                params: list_params(),
                response_schema: None,
                answers: Answers::Ok,
            }
            .build(&tag),
        );
        item.insert(
            "parameters".into(),
            json!([query_param("pretty", "string")]),
        );
        paths.insert(format!("{prefix}/{}", r.plural), Value::Object(item));
    }

    // The object.
    let mut with_name = vec![path_param("name", &format!("name of the {kind}"))];
    with_name.extend(common.iter().cloned());
    let object_path = format!("{prefix}{ns_segment}/{}/{{name}}", r.plural);
    let mut item = read_write_ops(&gv, ns_word, kind, "", &r.gvk, schema, &tag);
    item.insert(
        "delete".into(),
        Op {
            action: "delete",
            description: format!("delete {}", article(kind)),
            operation_id: format!("delete{gv}{ns_word}{kind}"),
            gvk: Some(&r.gvk),
            params: delete_params(),
            response_schema: None,
            answers: Answers::Ok,
        }
        .build(&tag),
    );
    item.insert("parameters".into(), Value::Array(with_name.clone()));
    paths.insert(object_path.clone(), Value::Object(item));

    // The subresources.
    for sub in &r.subresources {
        let sub_word = capitalize(&sub.name);
        let mut item = match sub.shape {
            SubresourceShape::ReadWrite => read_write_ops(
                &gv,
                ns_word,
                kind,
                &sub_word,
                sub.gvk.as_ref().unwrap_or(&r.gvk),
                sub.schema_name.as_deref(),
                &tag,
            ),
            SubresourceShape::CreateOnly => {
                let mut item = Map::new();
                item.insert(
                    "post".into(),
                    Op {
                        action: "post",
                        description: format!("create {} of {}", sub.name, article(kind)),
                        operation_id: format!("create{gv}{ns_word}{kind}{sub_word}"),
                        gvk: sub.gvk.as_ref(),
                        params: write_params(),
                        response_schema: sub.schema_name.as_deref(),
                        answers: Answers::OkCreatedAccepted,
                    }
                    .build(&tag),
                );
                item
            }
            SubresourceShape::Connect => {
                let mut item = Map::new();
                for (method, verb) in [("get", "connectGet"), ("post", "connectPost")] {
                    item.insert(
                        method.into(),
                        Op {
                            action: "connect",
                            description: format!(
                                "connect {method} requests to {} of {kind}",
                                sub.name
                            ),
                            operation_id: format!("{verb}{gv}{ns_word}{kind}{sub_word}"),
                            gvk: sub.gvk.as_ref(),
                            params: Vec::new(),
                            response_schema: None,
                            answers: Answers::Ok,
                        }
                        .build(&tag),
                    );
                }
                item
            }
        };
        item.insert("parameters".into(), Value::Array(with_name.clone()));
        paths.insert(format!("{object_path}/{}", sub.name), Value::Object(item));
    }
}

/// get/put/patch of an object or of a subresource of it.
fn read_write_ops(
    gv: &str,
    ns_word: &str,
    kind: &str,
    sub_word: &str,
    gvk: &Gvk,
    schema: Option<&str>,
    tag: &str,
) -> Map<String, Value> {
    let what = if sub_word.is_empty() {
        format!("the specified {kind}")
    } else {
        format!("{} of the specified {kind}", sub_word.to_lowercase())
    };
    let mut item = Map::new();
    item.insert(
        "get".into(),
        Op {
            action: "get",
            description: format!("read {what}"),
            operation_id: format!("read{gv}{ns_word}{kind}{sub_word}"),
            gvk: Some(gvk),
            params: Vec::new(),
            response_schema: schema,
            answers: Answers::Ok,
        }
        .build(tag),
    );
    item.insert(
        "put".into(),
        Op {
            action: "put",
            description: format!("replace {what}"),
            operation_id: format!("replace{gv}{ns_word}{kind}{sub_word}"),
            gvk: Some(gvk),
            params: write_params(),
            response_schema: schema,
            answers: Answers::OkCreated,
        }
        .build(tag),
    );
    item.insert(
        "patch".into(),
        Op {
            action: "patch",
            description: format!("partially update {what}"),
            operation_id: format!("patch{gv}{ns_word}{kind}{sub_word}"),
            gvk: Some(gvk),
            params: patch_params(),
            response_schema: schema,
            answers: Answers::OkCreated,
        }
        .build(tag),
    );
    item
}

/// `a Pod`, `an Ingress`.
fn article(kind: &str) -> String {
    match kind.chars().next() {
        Some(c) if "AEIOU".contains(c) => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_group_version_core_apps_and_dotted() {
        assert_eq!(operation_group_version("", "v1"), "CoreV1");
        assert_eq!(operation_group_version("apps", "v1"), "AppsV1");
        assert_eq!(
            operation_group_version("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(
            operation_group_version("stable.example.com", "v1beta1"),
            "StableExampleComV1beta1"
        );
    }

    #[test]
    fn prefix_core_and_grouped() {
        assert_eq!(prefix("", "v1"), "/api/v1");
        assert_eq!(prefix("apps", "v1"), "/apis/apps/v1");
    }
}
