//! Discovery (`/api`, `/apis`, aggregated v2/v2beta1 and legacy), `/version`, OpenAPI v3 and
//! `/metrics`, all generated from the registry.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use mini_api::{ApiError, Registry, ResourceInfo};
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::request::Query;
use crate::{ApiServer, KUBERNETES_VERSION};

pub fn version() -> Value {
    let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or("33");
    json!({
        "major": "1",
        "minor": minor,
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "mini",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": format!("linux/{}", match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
        "emulationMajor": "1",
        "emulationMinor": minor,
    })
}

/// Which aggregated discovery version the Accept header asks for, if any.
fn aggregated_version(req: &Request<Bytes>) -> Option<&'static str> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for part in accept.split(',') {
        if !part.contains("as=APIGroupDiscoveryList") {
            continue;
        }
        if part.contains("v=v2;") || part.trim_end().ends_with("v=v2") {
            return Some("v2");
        }
        if part.contains("v=v2beta1") {
            return Some("v2beta1");
        }
    }
    None
}

fn scope(r: &ResourceInfo) -> &'static str {
    if r.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": scope(r),
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        v["subresources"] = Value::Array(
            r.subresources
                .iter()
                .map(|s| json!({"subresource": s.name, "responseKind": {"group": s.group, "version": s.version, "kind": s.kind}, "verbs": s.verbs}))
                .collect(),
        );
    }
    v
}

fn aggregated_group(registry: &Registry, group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = registry
                .group_version(group, v)
                .into_iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

fn aggregated(registry: &Registry, core: bool, version: &str) -> Response<Body> {
    let items: Vec<Value> = registry
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| aggregated_group(registry, &g, &vs))
        .collect();
    let doc = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    let mut resp = body::json(StatusCode::OK, &doc);
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, ct.parse().expect("valid header"));
    resp
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = registry.group_version(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for r in resources {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
            "storageVersionHash": "",
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        out.push(v);
        for s in &r.subresources {
            let mut sv = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                sv["group"] = json!(s.group);
                sv["version"] = json!(s.version);
            }
            out.push(sv);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

/// The OpenAPI v3 documents of the current registry.
pub struct OpenApiDocs {
    pub index: Value,
    /// (`api/v1` or `apis/<g>/<v>`, serialised document)
    pub documents: Vec<(String, Vec<u8>)>,
    /// The v3 documents as built, for the v2 document made from them on first request.
    built: Vec<(String, String, Value)>,
    /// `/openapi/v2`: (JSON, gnostic protobuf), made once per registry generation.
    v2: std::sync::OnceLock<(Vec<u8>, Vec<u8>)>,
}

impl OpenApiDocs {
    fn v2(&self) -> &(Vec<u8>, Vec<u8>) {
        self.v2.get_or_init(|| {
            let doc = mini_openapi::v2::swagger_document(&self.built);
            (
                serde_json::to_vec(&doc).unwrap_or_default(),
                mini_openapi::v2::to_protobuf(&doc),
            )
        })
    }
}

/// The media types client-go asks `/openapi/v2` for (the first) and that the answer carries
/// (the second: Go's mime parser refuses the `@`).
const OPENAPI_V2_PROTOBUF_ACCEPT: [&str; 2] = [
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
];

fn build_openapi(registry: &Registry) -> OpenApiDocs {
    let mut built = Vec::new();
    for (group, versions) in registry.groups() {
        for version in versions {
            let docs: Vec<mini_openapi::ResourceDoc> = registry
                .group_version(&group, &version)
                .into_iter()
                .map(|r| mini_openapi::ResourceDoc {
                    group: r.group.clone(),
                    version: r.version.clone(),
                    kind: r.kind.clone(),
                    plural: r.plural.clone(),
                    namespaced: r.namespaced,
                    subresources: r.subresources.iter().map(|s| s.name.clone()).collect(),
                    crd_schema: match (&r.custom, &r.storage) {
                        (Some(c), _) => Some(c.schema.clone().unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))),
                        // metrics.k8s.io kinds are not in k8s-openapi
                        (None, mini_api::Storage::Metrics | mini_api::Storage::Images) => Some(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
                        (None, _) => None,
                    },
                })
                .collect();
            let doc = mini_openapi::group_version_document(&group, &version, &docs);
            built.push((group.clone(), version.clone(), doc));
        }
    }
    let index = mini_openapi::index(&built);
    let documents = built
        .iter()
        .map(|(g, v, doc)| {
            let key = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            (key, serde_json::to_vec(doc).unwrap_or_default())
        })
        .collect();
    OpenApiDocs {
        index,
        documents,
        built,
        v2: std::sync::OnceLock::new(),
    }
}

fn openapi(server: &ApiServer) -> Arc<OpenApiDocs> {
    let generation = server.inner.registry_generation.load(Ordering::SeqCst);
    let mut cache = server
        .inner
        .openapi_cache
        .lock()
        .expect("openapi cache poisoned");
    if let Some((g, docs)) = cache.as_ref() {
        if *g == generation {
            return docs.clone();
        }
    }
    let docs = Arc::new(build_openapi(&server.registry()));
    *cache = Some((generation, docs.clone()));
    docs
}

/// Non-resource paths after authentication.
pub async fn non_resource(
    server: &ApiServer,
    req: &Request<Bytes>,
    _query: &Query,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let registry = server.registry();
    let path = path.trim_end_matches('/');
    let gzip = body::wants_gzip(req.headers());
    match path {
        "/api" => {
            if let Some(v) = aggregated_version(req) {
                return Ok(aggregated(&registry, true, v));
            }
            let addr = format!(
                "{}:{}",
                server.inner.config.advertise_address, server.inner.config.advertise_port
            );
            return Ok(body::json(
                StatusCode::OK,
                &json!({
                    "kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
                }),
            ));
        }
        "/apis" => {
            if let Some(v) = aggregated_version(req) {
                return Ok(aggregated(&registry, false, v));
            }
            let groups: Vec<Value> = registry
                .groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| group_json(&g, &vs))
                .collect();
            return Ok(body::json(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        "/metrics" => {
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(body::full(server.inner.metrics.render()))
                .expect("valid response"));
        }
        "/openapi/v2" => {
            let docs = openapi(server);
            let (json_doc, protobuf) = docs.v2();
            let wants_protobuf = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| OPENAPI_V2_PROTOBUF_ACCEPT.iter().any(|t| v.contains(t)));
            if wants_protobuf {
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, OPENAPI_V2_PROTOBUF_ACCEPT[1])
                    .body(body::full(protobuf.clone()))
                    .expect("valid response"));
            }
            return Ok(body::json_bytes(StatusCode::OK, json_doc.clone(), gzip));
        }
        "/openapi/v3" => {
            let docs = openapi(server);
            return Ok(body::json(StatusCode::OK, &docs.index));
        }
        _ => {}
    }
    if let Some(key) = path.strip_prefix("/openapi/v3/") {
        let docs = openapi(server);
        return match docs.documents.iter().find(|(k, _)| k == key) {
            Some((_, doc)) => Ok(body::json_bytes(StatusCode::OK, doc.clone(), gzip)),
            None => Err(ApiError::no_route()),
        };
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api", version] => resource_list(&registry, "", version)
            .map(|l| body::json(StatusCode::OK, &l))
            .ok_or_else(ApiError::no_route),
        ["apis", group] => registry
            .groups()
            .into_iter()
            .find(|(g, _)| g == group)
            .map(|(g, vs)| {
                let mut v = group_json(&g, &vs);
                v["kind"] = json!("APIGroup");
                v["apiVersion"] = json!("v1");
                body::json(StatusCode::OK, &v)
            })
            .ok_or_else(ApiError::no_route),
        ["apis", group, version] => resource_list(&registry, group, version)
            .map(|l| body::json(StatusCode::OK, &l))
            .ok_or_else(ApiError::no_route),
        _ => Err(ApiError::no_route()),
    }
}
