//! What one caller may read: the namespaces whose pods (metrics) or pod logs (logs) RBAC lets
//! them read, and whether they may see node-level figures.

use std::collections::{BTreeMap, BTreeSet};

use mini_apiserver::ApiServer;
use mini_logstore::NamespaceScope;
use mini_rbac::UserInfo;

/// The label that places a series or a log stream in a namespace; node-level series have none.
pub const SERIES_NAMESPACE_LABEL: &str = "namespace";

const NAMESPACES_PREFIX: &str = "/registry/core/namespaces/";

/// The part of the cluster's figures and logs one caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every namespace (also those deleted since).
    pub namespaces: Option<BTreeSet<String>>,
    /// Whether node-level series (without a namespace label) are visible.
    pub nodes: bool,
}

impl Scope {
    /// Everything.
    pub fn all() -> Scope {
        Scope {
            namespaces: None,
            nodes: true,
        }
    }

    /// Nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.nodes && self.namespaces.as_ref().is_some_and(BTreeSet::is_empty)
    }

    /// Whether a series or stream with these labels is visible.
    pub fn allows(&self, labels: &BTreeMap<String, String>) -> bool {
        match labels
            .get(SERIES_NAMESPACE_LABEL)
            .filter(|ns| !ns.is_empty())
        {
            Some(ns) => self.namespaces.as_ref().is_none_or(|set| set.contains(ns)),
            None => self.nodes,
        }
    }

    /// The scope as the log store takes it (log streams always carry a namespace).
    pub fn log_scope(&self) -> NamespaceScope {
        match &self.namespaces {
            None => NamespaceScope::All,
            Some(set) => NamespaceScope::Only(set.clone()),
        }
    }

    /// A matcher restricting a series selection to this scope: `namespace=~"a|b"`, with an
    /// empty alternative when node-level series are visible; `None` when all is visible.
    pub fn series_regex(&self) -> Option<String> {
        let set = self.namespaces.as_ref()?;
        let mut alternatives: Vec<String> = set.iter().map(|ns| regex_escape(ns)).collect();
        if self.nodes {
            alternatives.push(String::new());
        }
        Some(alternatives.join("|"))
    }
}

/// Escapes the regex metacharacters of a name (namespace names are DNS labels; this is a guard).
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The namespaces that exist now.
async fn namespaces(api: &ApiServer) -> Vec<String> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = match api
            .store()
            .list(NAMESPACES_PREFIX, after.as_deref(), 1000)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "listing namespaces for a query's scope failed");
                return names;
            }
        };
        let Some(last) = page.items.last().map(|kv| kv.key.clone()) else {
            return names;
        };
        let more = page.more;
        names.extend(
            page.items
                .iter()
                .filter_map(|kv| kv.key.strip_prefix(NAMESPACES_PREFIX))
                .map(str::to_string),
        );
        if !more {
            return names;
        }
        after = Some(last);
    }
}

/// `resource` (`pods` or `pods/log`) readable cluster-wide → every namespace; otherwise each
/// namespace where `verb` on it is allowed.
async fn scope_for(
    api: &ApiServer,
    user: &UserInfo,
    verb: &str,
    resource: &str,
    nodes: bool,
) -> Scope {
    if api.may(user, verb, "", resource, None, None).await {
        return Scope {
            namespaces: None,
            nodes,
        };
    }
    let mut allowed = BTreeSet::new();
    for ns in namespaces(api).await {
        if api.may(user, verb, "", resource, Some(&ns), None).await {
            allowed.insert(ns);
        }
    }
    Scope {
        namespaces: Some(allowed),
        nodes,
    }
}

/// The metrics a caller may read: pods' series where they may list pods, node series when they
/// may read `nodes/metrics` (what scraping a kubelet needs upstream).
pub(crate) async fn metrics_scope(api: &ApiServer, user: &UserInfo) -> Scope {
    let nodes = api.may(user, "get", "", "nodes/metrics", None, None).await;
    scope_for(api, user, "list", "pods", nodes).await
}

/// The logs a caller may read: where they may get `pods/log` (as `kubectl logs` needs).
pub(crate) async fn logs_scope(api: &ApiServer, user: &UserInfo) -> Scope {
    scope_for(api, user, "get", "pods/log", false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn only(names: &[&str], nodes: bool) -> Scope {
        Scope {
            namespaces: Some(names.iter().map(|n| n.to_string()).collect()),
            nodes,
        }
    }

    #[test]
    fn scope_limited_allows_only_its_namespaces() {
        let scope = only(&["team-a"], false);
        assert!(scope.allows(&labels(&[("namespace", "team-a"), ("pod", "x")])));
        assert!(!scope.allows(&labels(&[("namespace", "team-b")])));
        assert!(
            !scope.allows(&labels(&[("__name__", "node_load1")])),
            "node series"
        );
    }

    #[test]
    fn scope_with_nodes_allows_node_series() {
        let scope = only(&[], true);
        assert!(scope.allows(&labels(&[("__name__", "node_load1"), ("namespace", "")])));
        assert!(!scope.allows(&labels(&[("namespace", "default")])));
        assert!(!scope.is_empty());
        assert!(only(&[], false).is_empty());
    }

    #[test]
    fn series_regex_lists_namespaces_and_empty_for_nodes() {
        assert_eq!(Scope::all().series_regex(), None);
        assert_eq!(
            only(&["a", "b"], false).series_regex().as_deref(),
            Some("a|b")
        );
        assert_eq!(only(&["a"], true).series_regex().as_deref(), Some("a|"));
    }

    #[test]
    fn log_scope_maps_all_and_only() {
        assert!(matches!(Scope::all().log_scope(), NamespaceScope::All));
        match only(&["x"], false).log_scope() {
            NamespaceScope::Only(set) => assert!(set.contains("x")),
            NamespaceScope::All => panic!("limited scope became all"),
        }
    }
}
