//! Server-side apply and `metadata.managedFields` tracking (upstream
//! `k8s.io/apimachinery/pkg/util/managedfields` over structured-merge-diff).

use crate::fieldset::{path_string, FieldSet, PathElement, Schema};
use crate::{strategy, FieldConflict, PatchError};
use serde_json::{Map, Value};

/// `metadata` fields that are never owned by a manager.
const UNOWNED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Which part of an object a write may own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything but `status` (main resource of a kind with a status subresource).
    Main,
    /// Only `status` (the status subresource).
    Status,
    /// Everything, `status` included (kinds without a known status subresource).
    All,
}

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    fn parse(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation").unwrap_or_else(|| "Update".to_string()),
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set: FieldSet::from_fields_v1(v.get("fieldsV1")?),
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::from(self.manager.clone()));
        m.insert("operation".into(), Value::from(self.operation.clone()));
        m.insert("apiVersion".into(), Value::from(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::from(t.clone()));
        }
        m.insert("fieldsType".into(), Value::from("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::from(s.clone()));
        }
        Value::Object(m)
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

fn parse_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Writes `entries` (empty sets dropped, sorted like upstream) to `metadata.managedFields`.
fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| a.time.cmp(&b.time))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
    });
    let Value::Object(root) = obj else { return };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else { return };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        let list = entries.iter().map(Entry::to_value).collect();
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// The part of `obj` whose fields can be owned in `scope`.
fn ownable(obj: &Value, scope: Scope) -> Value {
    let Value::Object(m) = obj else {
        return Value::Object(Map::new());
    };
    let mut out = m.clone();
    out.shift_remove("apiVersion");
    out.shift_remove("kind");
    if let Some(Value::Object(meta)) = out.get_mut("metadata") {
        for f in UNOWNED_METADATA {
            meta.shift_remove(*f);
        }
    }
    if out
        .get("metadata")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        out.shift_remove("metadata");
    }
    match scope {
        Scope::Main => {
            out.shift_remove("status");
        }
        Scope::Status => out.retain(|k, _| k == "status"),
        Scope::All => {}
    }
    Value::Object(out)
}

fn remove_metadata_fields(obj: &mut Value, fields: &[&str]) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        for f in fields {
            meta.shift_remove(*f);
        }
    }
}

/// See [`crate::server_side_apply`].
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    group: &str,
    kind: &str,
    now: &str,
) -> Result<Value, PatchError> {
    if !applied.is_object() {
        return Err(PatchError::Malformed(
            "applied configuration must be a JSON object".into(),
        ));
    }
    let schema = Schema { group, kind };
    let scope = if strategy::is_builtin(group, kind) {
        Scope::Main
    } else {
        Scope::All
    };
    let mut applied = applied.clone();
    remove_metadata_fields(&mut applied, &["managedFields"]);
    if scope == Scope::Main {
        if let Value::Object(m) = &mut applied {
            m.shift_remove("status");
        }
    }
    let applied_set = schema.to_set(&ownable(&applied, scope));
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mine = |set: FieldSet| Entry {
        manager: manager.to_string(),
        operation: "Apply".to_string(),
        api_version: api_version.clone(),
        time: Some(now.to_string()),
        subresource: None,
        set,
    };

    let Some(live) = live else {
        let mut out = applied;
        write_entries(&mut out, vec![mine(applied_set)]);
        return Ok(out);
    };

    let mut entries = parse_entries(live);
    let me = entries.iter().position(|e| e.is(manager, "Apply", None));
    let previous = me.map(|i| entries[i].set.clone()).unwrap_or_default();
    let mut live = live.clone();
    remove_metadata_fields(&mut live, &["managedFields"]);
    remove_metadata_fields(&mut applied, UNOWNED_METADATA_NOT_IDENTITY);

    // Conflicts: fields another manager owns whose applied value differs from the live one.
    let applied_members = applied_set.members();
    let mut conflicts = Vec::new();
    for (i, entry) in entries.iter_mut().enumerate() {
        if Some(i) == me {
            continue;
        }
        for path in &applied_members {
            if matches!(
                path.last(),
                Some(PathElement::Key(_) | PathElement::Value(_))
            ) {
                continue;
            }
            if !entry.set.contains(path) {
                continue;
            }
            if schema.value_at(&live, path) != schema.value_at(&applied, path) {
                conflicts.push(FieldConflict {
                    manager: entry.manager.clone(),
                    api_version: entry.api_version.clone(),
                    field: path_string(path),
                });
                if force {
                    entry.set.remove(path);
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(PatchError::Conflicts(conflicts));
    }

    // Merge, then drop what this manager stopped applying and nobody else owns.
    let mut out = schema.merge(&live, &applied, &mut Vec::new());
    let mut others = FieldSet::default();
    for (i, entry) in entries.iter().enumerate() {
        if Some(i) != me {
            others.union(&entry.set);
        }
    }
    let mut stale = previous.difference(&applied_set).difference(&others);
    for path in stale.members() {
        if others.has_descendants(&path) {
            stale.remove(&path);
        }
    }
    schema.remove_set(&mut out, &stale, &mut Vec::new());

    match me {
        Some(i) => entries[i] = mine(applied_set),
        None => entries.push(mine(applied_set)),
    }
    write_entries(&mut out, entries);
    Ok(out)
}

/// Server-maintained metadata the applied configuration must not overwrite.
const UNOWNED_METADATA_NOT_IDENTITY: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// See [`crate::track_update`].
pub fn update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    group: &str,
    kind: &str,
    now: &str,
) {
    let schema = Schema { group, kind };
    let scope = if subresource == Some("status") {
        Scope::Status
    } else {
        Scope::Main
    };
    let supplied = new
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null());
    let mut entries = if supplied {
        parse_entries(new)
    } else {
        old.map(parse_entries).unwrap_or_default()
    };

    let new_owned = ownable(new, scope);
    let new_set = schema.to_set(&new_owned);
    let (removed, changed) = match old {
        // a create: nothing removed, every field changed
        None => (FieldSet::default(), new_set),
        Some(old) => {
            let old_owned = ownable(old, scope);
            let old_set = schema.to_set(&old_owned);
            let removed = old_set.difference(&new_set);
            let mut changed = new_set.difference(&old_set);
            for path in new_set.members() {
                if matches!(
                    path.last(),
                    Some(PathElement::Key(_) | PathElement::Value(_))
                ) {
                    continue;
                }
                if old_set.contains(&path)
                    && schema.value_at(&old_owned, &path) != schema.value_at(&new_owned, &path)
                {
                    changed.insert(&path);
                }
            }
            (removed, changed)
        }
    };

    let me = entries
        .iter()
        .position(|e| e.is(manager, "Update", subresource));
    for (i, entry) in entries.iter_mut().enumerate() {
        entry.set = entry.set.difference(&removed);
        if Some(i) != me {
            entry.set = entry.set.difference(&changed);
        }
    }
    if !changed.is_empty() {
        let api_version = new
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match me {
            Some(i) => {
                let entry = &mut entries[i];
                entry.set.union(&changed);
                entry.api_version = api_version;
                entry.time = Some(now.to_string());
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".to_string(),
                api_version,
                time: Some(now.to_string()),
                subresource: subresource.map(str::to_string),
                set: changed,
            }),
        }
    }
    if entries.is_empty() && !supplied {
        remove_metadata_fields(new, &["managedFields"]);
        return;
    }
    write_entries(new, entries);
}

#[cfg(test)]
mod tests {
    use crate::{server_side_apply, track_update, PatchError};
    use serde_json::{json, Value};

    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-01-02T00:00:00Z";

    fn deploy(replicas: i64, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1", "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    fn apply(
        live: Option<&Value>,
        applied: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, PatchError> {
        server_side_apply(live, applied, manager, force, "apps", "Deployment", T1)
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == manager)
    }

    #[test]
    fn apply_create_records_upstream_fields_v1() {
        let out = apply(None, &deploy(2, json!({"app": "web"})), "kubectl", false).unwrap();
        assert_eq!(out["spec"]["replicas"], json!(2));
        let e = entry(&out, "kubectl").unwrap();
        assert_eq!(e["operation"], json!("Apply"));
        assert_eq!(e["apiVersion"], json!("apps/v1"));
        assert_eq!(e["time"], json!(T1));
        assert_eq!(e["fieldsType"], json!("FieldsV1"));
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn reapply_without_a_field_removes_it() {
        let live = apply(
            None,
            &deploy(2, json!({"app": "web", "tier": "front"})),
            "kubectl",
            false,
        )
        .unwrap();
        let out = apply(
            Some(&live),
            &deploy(2, json!({"app": "web"})),
            "kubectl",
            false,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        let e = entry(&out, "kubectl").unwrap();
        assert_eq!(
            e["fieldsV1"]["f:metadata"],
            json!({"f:labels": {"f:app": {}}})
        );
        assert_eq!(
            out["metadata"]["managedFields"].as_array().unwrap().len(),
            1
        );
    }

    #[test]
    fn second_manager_changing_replicas_conflicts() {
        let live = apply(None, &deploy(2, json!({"app": "web"})), "kubectl", false).unwrap();
        let err = apply(
            Some(&live),
            &deploy(5, json!({"app": "web"})),
            "other",
            false,
        )
        .unwrap_err();
        let PatchError::Conflicts(c) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].manager, "kubectl");
        assert_eq!(c[0].api_version, "apps/v1");
        assert_eq!(c[0].field, ".spec.replicas");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn conflict_path_names_keyed_list_items() {
        let live = apply(None, &deploy(2, json!({"app": "web"})), "kubectl", false).unwrap();
        let mut mine = deploy(2, json!({"app": "web"}));
        mine["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        let err = apply(Some(&live), &mine, "other", false).unwrap_err();
        let PatchError::Conflicts(c) = err else {
            panic!()
        };
        assert_eq!(
            c[0].field,
            ".spec.template.spec.containers[name=\"nginx\"].image"
        );
    }

    #[test]
    fn force_takes_ownership_from_other_manager() {
        let live = apply(None, &deploy(2, json!({"app": "web"})), "kubectl", false).unwrap();
        let out = apply(
            Some(&live),
            &deploy(5, json!({"app": "web"})),
            "other",
            true,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], json!(5));
        let k = entry(&out, "kubectl").unwrap();
        assert!(k["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        assert!(k["fieldsV1"]["f:spec"].get("f:selector").is_some());
        let o = entry(&out, "other").unwrap();
        assert!(o["fieldsV1"]["f:spec"].get("f:replicas").is_some());
    }

    #[test]
    fn equal_values_are_shared_without_conflict() {
        let live = apply(None, &deploy(2, json!({"app": "web"})), "kubectl", false).unwrap();
        let out = apply(
            Some(&live),
            &deploy(2, json!({"app": "web"})),
            "other",
            false,
        )
        .unwrap();
        for m in ["kubectl", "other"] {
            assert!(entry(&out, m).unwrap()["fieldsV1"]["f:spec"]
                .get("f:replicas")
                .is_some());
        }
        // A field still owned by another manager survives when one manager stops applying it.
        let mut less = deploy(2, json!({"app": "web"}));
        less["spec"]
            .as_object_mut()
            .unwrap()
            .shift_remove("replicas");
        let out2 = apply(Some(&out), &less, "kubectl", false).unwrap();
        assert_eq!(out2["spec"]["replicas"], json!(2));
    }

    #[test]
    fn scale_update_then_apply_conflicts_with_update_manager() {
        let live = apply(None, &deploy(2, json!({"app": "web"})), "kubectl", false).unwrap();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(4);
        scaled["metadata"]
            .as_object_mut()
            .unwrap()
            .shift_remove("managedFields");
        track_update(
            Some(&live),
            &mut scaled,
            "kubectl-scale",
            None,
            "apps",
            "Deployment",
            T2,
        );
        let upd = entry(&scaled, "kubectl-scale").unwrap();
        assert_eq!(upd["operation"], json!("Update"));
        assert_eq!(upd["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert!(entry(&scaled, "kubectl").unwrap()["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none());

        let err = apply(
            Some(&scaled),
            &deploy(2, json!({"app": "web"})),
            "kubectl",
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
        );
        let forced = apply(
            Some(&scaled),
            &deploy(2, json!({"app": "web"})),
            "kubectl",
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], json!(2));
        assert!(entry(&forced, "kubectl-scale").is_none());
    }

    #[test]
    fn track_update_create_owns_all_fields_but_status_and_server_metadata() {
        let mut obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "u", "resourceVersion": "1", "labels": {"a": "b"}},
            "data": {"k": "v"},
            "status": {"x": 1}
        });
        track_update(None, &mut obj, "kubectl-create", None, "", "ConfigMap", T1);
        let e = &obj["metadata"]["managedFields"][0];
        assert_eq!(e["operation"], json!("Update"));
        assert_eq!(e["apiVersion"], json!("v1"));
        assert_eq!(
            e["fieldsV1"],
            json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}})
        );
        assert!(e.get("subresource").is_none());
    }

    #[test]
    fn track_update_status_subresource_only_tracks_status() {
        let old = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "a"}});
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!("b");
        new["status"] =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        track_update(
            Some(&old),
            &mut new,
            "kubelet",
            Some("status"),
            "",
            "Pod",
            T1,
        );
        let e = &new["metadata"]["managedFields"][0];
        assert_eq!(e["subresource"], json!("status"));
        assert_eq!(
            e["fieldsV1"],
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:phase": {}}})
        );
    }

    #[test]
    fn track_update_keeps_client_supplied_managed_fields_and_drops_empty_managers() {
        let mut live = apply(None, &deploy(2, json!({"app": "web"})), "kubectl", false).unwrap();
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([]);
        track_update(
            Some(&live),
            &mut new,
            "editor",
            None,
            "apps",
            "Deployment",
            T2,
        );
        assert!(new["metadata"].get("managedFields").is_none());

        // Removing the only label the applier owned removes it from its set.
        live["metadata"]["managedFields"][0]["fieldsV1"] =
            json!({"f:metadata": {"f:labels": {"f:app": {}}}});
        let mut new = live.clone();
        new["metadata"]
            .as_object_mut()
            .unwrap()
            .shift_remove("labels");
        new["metadata"]
            .as_object_mut()
            .unwrap()
            .shift_remove("managedFields");
        track_update(
            Some(&live),
            &mut new,
            "editor",
            None,
            "apps",
            "Deployment",
            T2,
        );
        assert!(new["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn apply_keeps_live_only_list_items_and_status() {
        let mut live = apply(None, &deploy(2, json!({"app": "web"})), "kubectl", false).unwrap();
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "envoy"}));
        live["status"] = json!({"replicas": 2});
        let mut mine = deploy(2, json!({"app": "web"}));
        mine["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        let out = apply(Some(&live), &mine, "kubectl", false).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], json!("nginx:2"));
        assert_eq!(cs[1]["name"], json!("sidecar"));
        assert_eq!(out["status"], json!({"replicas": 2}));
    }
}
