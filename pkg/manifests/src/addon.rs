//! The `Addon` kind (`addons.mini.dev`, one per manifest file, in kube-system): its CRD, the
//! name a file gets, and which objects a new version of a file removes.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{json, Value};

use crate::documents::{self, ObjectRef};

pub const GROUP: &str = "mini.dev";
pub const VERSION: &str = "v1";
pub const KIND: &str = "Addon";
pub const PLURAL: &str = "addons";
pub const CRD_NAME: &str = "addons.mini.dev";
/// Where Addons live.
pub const NAMESPACE: &str = "kube-system";

/// The CustomResourceDefinition of `Addon`, applied by the server at start.
pub fn crd() -> Value {
    let object_ref = json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "namespace": {"type": "string"},
            "name": {"type": "string"},
        },
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "addon", "kind": KIND, "listKind": "AddonList"},
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Source", "type": "string", "jsonPath": ".spec.source", "description": "the manifest file"},
                    {"name": "Checksum", "type": "string", "jsonPath": ".spec.checksum", "description": "sha256 of the file last applied"},
                    {"name": "Objects", "type": "integer", "jsonPath": ".status.objectCount", "description": "objects applied from the file"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "a manifest file of the server's manifests directory, applied to the cluster",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "source": {"type": "string", "description": "path of the manifest file"},
                                "checksum": {"type": "string", "description": "sha256 of the file contents, hex"},
                            },
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "objects": {"type": "array", "items": object_ref},
                                "objectCount": {"type": "integer"},
                                "lastError": {"type": "string", "description": "what failed in the last apply, empty when it succeeded"},
                            },
                        },
                    },
                }},
            }],
        },
    })
}

/// The Addon name of a manifest file: its stem made a DNS subdomain (`My_App.yaml` ->
/// `my-app`).
pub fn sanitize(stem: &str) -> String {
    let mapped: String = stem
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = trimmed.chars().take(253).collect();
    name = name
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if name.is_empty() {
        "manifest".into()
    } else {
        name
    }
}

/// Addon names for the manifest files of a directory (sorted file names in, file -> name out).
/// Two files with one stem (`a.yaml`, `a.json`) cannot share an Addon: the later one is named by
/// its whole file name (`a-json`).
pub fn addon_names(files: &[String]) -> BTreeMap<String, String> {
    let mut sorted: Vec<&String> = files.iter().collect();
    sorted.sort();
    let mut taken = HashSet::new();
    let mut names = BTreeMap::new();
    for file in sorted {
        let mut name = sanitize(documents::file_stem(file));
        if taken.contains(&name) {
            name = sanitize(&file.replace('.', "-"));
        }
        let base = name.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        taken.insert(name.clone());
        names.insert(file.clone(), name);
    }
    names
}

/// The objects to delete after applying a new version of a file: those applied from it before
/// that it no longer names. A file with a broken document prunes nothing (the document may be
/// the one naming an object).
pub fn prune_set(previous: &[ObjectRef], desired: &[ObjectRef], parse_ok: bool) -> Vec<ObjectRef> {
    if !parse_ok {
        return Vec::new();
    }
    let wanted: BTreeSet<_> = desired.iter().map(ObjectRef::key).collect();
    let mut prune: Vec<ObjectRef> = previous
        .iter()
        .filter(|r| !wanted.contains(&r.key()))
        .cloned()
        .collect();
    sort_for_removal(&mut prune);
    prune
}

/// Removal order: everything else, then CRDs, then Namespaces (the reverse of apply order).
pub fn sort_for_removal(refs: &mut [ObjectRef]) {
    refs.sort_by_key(|r| std::cmp::Reverse(documents::apply_rank(&r.kind)));
}

/// The Addon's new object list: what stayed from before (not removed) plus what was applied now,
/// once each, by identity.
pub fn merge_refs(
    previous: &[ObjectRef],
    removed: &[ObjectRef],
    applied: &[ObjectRef],
) -> Vec<ObjectRef> {
    let gone: BTreeSet<_> = removed.iter().map(ObjectRef::key).collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    // the version just applied wins over the one recorded before
    for r in applied
        .iter()
        .chain(previous.iter().filter(|r| !gone.contains(&r.key())))
    {
        if seen.insert(r.key()) {
            out.push(r.clone());
        }
    }
    out
}

/// The object references recorded in an Addon's status.
pub fn status_refs(addon: &Value) -> Vec<ObjectRef> {
    addon["status"]["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(ObjectRef::from_json)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(api_version: &str, kind: &str, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn sanitize_makes_dns_names() {
        assert_eq!(sanitize("local-storage"), "local-storage");
        assert_eq!(sanitize("My_App"), "my-app");
        assert_eq!(sanitize("_x_"), "x");
        assert_eq!(sanitize("___"), "manifest");
        assert_eq!(sanitize(&"a".repeat(300)).len(), 253);
    }

    #[test]
    fn addon_names_same_stem_gets_distinct_names() {
        let names = addon_names(&["a.yaml".into(), "a.json".into(), "B.yml".into()]);
        assert_eq!(names["a.json"], "a");
        assert_eq!(names["a.yaml"], "a-yaml");
        assert_eq!(names["B.yml"], "b");
    }

    #[test]
    fn prune_set_removed_object_is_pruned_namespaces_last() {
        let previous = vec![
            r("v1", "Namespace", "", "demo"),
            r("v1", "ConfigMap", "demo", "a"),
            r("apps/v1", "Deployment", "demo", "web"),
        ];
        let desired = vec![r("apps/v1", "Deployment", "demo", "web")];
        assert_eq!(
            prune_set(&previous, &desired, true),
            vec![
                r("v1", "ConfigMap", "demo", "a"),
                r("v1", "Namespace", "", "demo")
            ]
        );
    }

    #[test]
    fn prune_set_parse_error_prunes_nothing() {
        let previous = vec![r("v1", "ConfigMap", "default", "a")];
        assert!(prune_set(&previous, &[], false).is_empty());
    }

    #[test]
    fn prune_set_version_change_is_not_a_removal() {
        let previous = vec![r("apps/v1beta1", "Deployment", "default", "web")];
        let desired = vec![r("apps/v1", "Deployment", "default", "web")];
        assert!(prune_set(&previous, &desired, true).is_empty());
    }

    #[test]
    fn merge_refs_keeps_failed_previous_and_adds_applied() {
        let previous = vec![
            r("v1", "ConfigMap", "default", "kept"),
            r("v1", "ConfigMap", "default", "gone"),
        ];
        let removed = vec![r("v1", "ConfigMap", "default", "gone")];
        let applied = vec![r("v1", "Secret", "default", "new")];
        assert_eq!(
            merge_refs(&previous, &removed, &applied),
            vec![
                r("v1", "Secret", "default", "new"),
                r("v1", "ConfigMap", "default", "kept")
            ]
        );
    }

    #[test]
    fn status_refs_reads_objects() {
        let addon = json!({"status": {"objects": [
            {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default", "name": "a"},
            {"kind": "broken"},
        ]}});
        assert_eq!(
            status_refs(&addon),
            vec![r("v1", "ConfigMap", "default", "a")]
        );
    }
}
