//! PolicyRule parsing and the upstream rule-matching semantics.

use serde_json::{Map, Value};

use crate::RequestAttributes;

/// A parsed `rbac.authorization.k8s.io/v1` PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

/// The strings of the array at `key`; absent, null or non-string entries are skipped.
pub(crate) fn string_list(obj: &Value, key: &str) -> Vec<String> {
    obj.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn to_json_array(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

impl PolicyRule {
    pub(crate) fn from_json(rule: &Value) -> Self {
        PolicyRule {
            verbs: string_list(rule, "verbs"),
            api_groups: string_list(rule, "apiGroups"),
            resources: string_list(rule, "resources"),
            resource_names: string_list(rule, "resourceNames"),
            non_resource_urls: string_list(rule, "nonResourceURLs"),
        }
    }

    /// The rules of a Role or ClusterRole object (its `rules` array).
    pub(crate) fn list_from_role(role: &Value) -> Vec<Self> {
        role.get("rules")
            .and_then(Value::as_array)
            .map(|rules| rules.iter().map(PolicyRule::from_json).collect())
            .unwrap_or_default()
    }

    /// The PolicyRule JSON form (empty optional lists omitted, as upstream's `omitempty`).
    pub(crate) fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("verbs".into(), to_json_array(&self.verbs));
        let optional = [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ];
        for (key, items) in optional {
            if !items.is_empty() {
                out.insert(key.into(), to_json_array(items));
            }
        }
        Value::Object(out)
    }

    /// SelfSubjectRulesReview `ResourceRule` form.
    pub(crate) fn to_resource_rule_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("verbs".into(), to_json_array(&self.verbs));
        let optional = [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
        ];
        for (key, items) in optional {
            if !items.is_empty() {
                out.insert(key.into(), to_json_array(items));
            }
        }
        Value::Object(out)
    }

    /// SelfSubjectRulesReview `NonResourceRule` form.
    pub(crate) fn to_non_resource_rule_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("verbs".into(), to_json_array(&self.verbs));
        if !self.non_resource_urls.is_empty() {
            out.insert(
                "nonResourceURLs".into(),
                to_json_array(&self.non_resource_urls),
            );
        }
        Value::Object(out)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn api_group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    /// `*` matches everything (subresources included), `resource/sub` matches exactly, and
    /// `*/sub` matches that subresource of any resource. Like upstream, `pods/*` is not a
    /// wildcard: it only matches the literal string.
    fn resource_matches(&self, combined: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" || r == combined {
                return true;
            }
            !subresource.is_empty()
                && r.strip_prefix("*/")
                    .is_some_and(|sub_pattern| sub_pattern == subresource)
        })
    }

    /// A rule without resourceNames matches any name; one with resourceNames only matches
    /// requests naming one of them (so unnamed list/create/watch never match).
    fn resource_name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    /// `*` matches every path, exact paths match, and a trailing `*` is a prefix match.
    fn non_resource_url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            if u == "*" || u == path {
                return true;
            }
            u.ends_with('*') && path.starts_with(u.trim_end_matches('*'))
        })
    }

    /// Whether this rule grants the request (upstream's `RuleAllows`).
    pub(crate) fn allows(&self, attrs: &RequestAttributes) -> bool {
        if attrs.resource_request {
            let combined = if attrs.subresource.is_empty() {
                attrs.resource.clone()
            } else {
                format!("{}/{}", attrs.resource, attrs.subresource)
            };
            self.verb_matches(&attrs.verb)
                && self.api_group_matches(&attrs.api_group)
                && self.resource_matches(&combined, &attrs.subresource)
                && self.resource_name_matches(&attrs.name)
        } else {
            self.verb_matches(&attrs.verb) && self.non_resource_url_matches(&attrs.path)
        }
    }
}
