//! Turning a request's method, path and query into what it asks for (upstream's RequestInfo).

use std::collections::HashMap;

use http::Method;

/// A parsed resource request path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Path under /api or /apis that names a resource; false for /healthz, /api, /apis/g, ...
    pub resource_request: bool,
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Trailing path after the subresource (`pods/x/proxy/some/path`).
    pub rest: Vec<String>,
    /// get, list, watch, create, update, patch, delete, deletecollection, or the lowercased
    /// method for non-resource requests.
    pub verb: String,
    pub path: String,
    /// For a list or watch, the name a `metadata.name=` field selector pins (upstream
    /// authorizes such a request as one for that name).
    pub selector_name: Option<String>,
}

/// Query parameters (first value wins, as upstream for single-valued parameters).
#[derive(Debug, Clone, Default)]
pub struct Query {
    first: HashMap<String, String>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let mut first = HashMap::new();
        for (k, v) in &pairs {
            first.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Query { first }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.first.get(key).map(String::as_str)
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// Parses a request. Namespace subresources (`namespaces/x/status`, `/finalize`) are told
/// apart from namespaced resources by `namespace_subresources`.
pub fn parse(method: &Method, path: &str, query: &Query) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.as_str().to_ascii_lowercase(),
        ..Default::default()
    };
    let segs = segments(path);
    let mut rest: &[String] = &segs;
    match rest.first().map(String::as_str) {
        Some("api") if rest.len() >= 3 => {
            info.version = rest[1].clone();
            rest = &rest[2..];
        }
        Some("apis") if rest.len() >= 4 => {
            info.group = rest[1].clone();
            info.version = rest[2].clone();
            rest = &rest[3..];
        }
        _ => return info,
    }
    let mut watch_path = false;
    if rest.first().map(String::as_str) == Some("watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    if rest.is_empty() {
        return info;
    }
    info.resource_request = true;
    // namespaces/<ns>/<resource>... (but namespaces/<name>[/status|/finalize] is the namespace)
    if rest[0] == "namespaces"
        && rest.len() >= 3
        && !matches!(rest[2].as_str(), "status" | "finalize")
    {
        info.namespace = Some(rest[1].clone());
        rest = &rest[2..];
    }
    info.resource = rest[0].clone();
    if rest.len() >= 2 {
        info.name = Some(rest[1].clone());
    }
    if rest.len() >= 3 {
        info.subresource = Some(rest[2].clone());
    }
    if rest.len() >= 4 {
        info.rest = rest[3..].to_vec();
    }
    let watch = watch_path || query.flag("watch");
    info.verb = match *method {
        Method::GET | Method::HEAD => {
            if watch {
                "watch"
            } else if info.name.is_some() {
                "get"
            } else {
                "list"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => {
            if info.name.is_some() {
                "delete"
            } else {
                "deletecollection"
            }
        }
        _ => "unknown",
    }
    .to_string();
    // upstream: a watch naming an object is a watch with a metadata.name field selector
    if matches!(info.verb.as_str(), "list" | "watch") && info.name.is_none() {
        info.selector_name = query
            .get("fieldSelector")
            .and_then(|f| mini_api::FieldSelector::parse(f).ok())
            .and_then(|f| f.exact_name().map(str::to_string))
            .filter(|n| !n.is_empty() && !n.contains('/'));
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: Method, path: &str, q: &str) -> RequestInfo {
        parse(&method, path, &Query::parse(Some(q)))
    }

    #[test]
    fn parse_namespaced_pod_get() {
        let i = p(Method::GET, "/api/v1/namespaces/default/pods/web", "");
        assert_eq!(
            (
                i.namespace.as_deref(),
                i.resource.as_str(),
                i.name.as_deref(),
                i.verb.as_str()
            ),
            (Some("default"), "pods", Some("web"), "get")
        );
    }

    #[test]
    fn parse_namespace_status_is_the_namespace_subresource() {
        let i = p(Method::PUT, "/api/v1/namespaces/dev/status", "");
        assert_eq!(
            (
                i.namespace,
                i.resource.as_str(),
                i.name.as_deref(),
                i.subresource.as_deref()
            ),
            (None, "namespaces", Some("dev"), Some("status"))
        );
    }

    #[test]
    fn parse_group_list_with_watch_query_is_watch() {
        let i = p(
            Method::GET,
            "/apis/apps/v1/deployments",
            "watch=true&resourceVersion=5",
        );
        assert_eq!(
            (i.group.as_str(), i.version.as_str(), i.verb.as_str()),
            ("apps", "v1", "watch")
        );
    }

    #[test]
    fn parse_non_resource_paths_are_not_resource_requests() {
        assert!(!p(Method::GET, "/apis/apps", "").resource_request);
        assert!(!p(Method::GET, "/api/v1", "").resource_request);
        assert!(!p(Method::GET, "/healthz", "").resource_request);
        assert!(p(Method::DELETE, "/api/v1/namespaces/a/pods", "").verb == "deletecollection");
    }
}
